"""Suite files: YAML -> validated Suite -> [RunSpec] (framework-free).

The schema is lbbench/suite/config.py; every error is re-raised as a SuiteError that names the
file, the line and the field path.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from lbbench.methods import get_method, resolve_hparams
from lbbench.methods.registry import BadHParam, UnknownMethod
from lbbench.spec import BatchScheduleSpec, DataSpec, DiscardSpec, LrSpec, RunSpec, steps_per_epoch
from lbbench.suite import tuning
from lbbench.suite.config import BatchScheduleCfg, LrCfg, MethodCfg, SuiteCfg, TuningCfg
from lbbench.suite.recipes import RECIPES, Recipe
from lbbench.suite.yamlpos import SuiteError, fmt_path, line_of, load_with_lines
from lbbench.worker.schedules import goyal_milestones, scaled_lr, schedule_facts
from lbbench.workloads import WORKLOADS, Workload


class Suite:
    """A validated suite plus the bookkeeping needed to point errors at lines."""

    def __init__(self, file: Path, cfg: SuiteCfg, lines: dict[Any, Any]):
        self.file, self.cfg, self.lines = Path(file), cfg, lines
        self.name = cfg.name or self.file.stem

    def error(self, path: tuple[Any, ...], message: str) -> SuiteError:
        return SuiteError(self.file, line_of(self.lines, path), fmt_path(path), message)


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def expand_env(text: str) -> tuple[str | None, str | None]:
    """``${VAR}`` / ``${VAR:-default}``; returns (value, None) or (None, name of the unset var)."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        val = os.environ.get(m.group(1))
        if val is None:
            if m.group(2) is None:
                missing.append(m.group(1))
                return ""
            return str(m.group(2))
        return val

    out = _VAR.sub(sub, text)
    return (None, missing[0]) if missing else (out, None)


def load_suite(file: str | Path) -> Suite:
    file = Path(file)
    raw, lines = load_with_lines(file)
    if not isinstance(raw, dict):
        raise SuiteError(file, 1, "", "a suite must be a mapping")
    try:
        cfg = SuiteCfg.model_validate(raw)
    except ValidationError as e:
        # An unknown key first: a typo ("matirx") otherwise shows up as the missing field it
        # was meant to be, which names neither the typo nor its line.
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        err = errors[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(loc)
        elif err["type"] == "missing":
            msg = "required field is missing"
        else:
            msg = err["msg"]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SuiteError(file, line_of(lines, loc), fmt_path(loc), msg + more) from None
    suite = Suite(file, cfg, lines)
    _check(suite)
    return suite


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """ "; did you mean 'matrix'?" when an unknown key is close to a field of its block."""
    model: type[BaseModel] | None = SuiteCfg
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[MethodCfg] | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _check(suite: Suite) -> None:
    cfg = suite.cfg
    if cfg.workload.name not in WORKLOADS:
        raise suite.error(
            ("workload", "name"), f"unknown workload {cfg.workload.name!r}; known: {', '.join(WORKLOADS)}"
        )
    labels: set[str] = set()
    for i, m in enumerate(cfg.matrix.methods):
        try:
            resolve_hparams(m.name, m.hparams)
        except UnknownMethod as e:
            raise suite.error(("matrix", "methods", i, "name"), e.args[0]) from None
        except BadHParam as e:
            raise suite.error(("matrix", "methods", i, "hparams", e.key), str(e)) from None
        label = m.label or m.name
        if label in labels:
            raise suite.error(("matrix", "methods", i), f"duplicate method label {label!r}; give one a `label`")
        labels.add(label)
        if m.recipe and m.lr:
            raise suite.error(
                ("matrix", "methods", i, "lr"),
                f"recipe {m.recipe!r} sets every LR schedule field at each batch; remove this method's lr block",
            )
        if not m.recipe:
            _lr_for(suite, i)  # validates the merged LR block (a recipe row has none of its own)
        _check_tuning(suite, i)
    if cfg.matrix.local_batch and cfg.matrix.accum:
        raise suite.error(("matrix", "accum"), "give local_batch or accum, not both")
    for key in ("include", "exclude"):
        for j, cell in enumerate(getattr(cfg, key)):
            if cell.method is not None and cell.method not in labels:
                raise suite.error((key, j, "method"), f"no method labelled {cell.method!r} in matrix.methods")


def _check_tuning(suite: Suite, i: int) -> None:
    study = tuning_of(suite, i)
    if study is None:
        return
    m = suite.cfg.matrix.methods[i]
    own = "tuning" in m.model_fields_set
    base: tuple[Any, ...] = ("matrix", "methods", i, "tuning") if own else ("tuning",)
    known = set(get_method(m.name).hparams)
    for where, message in tuning.problems(study, known):
        raise suite.error(base + where, message if own else f"{message} (method {m.label or m.name!r})")
    if m.recipe and any(k.startswith("lr.") for k in study.space):
        key = next(k for k in study.space if k.startswith("lr."))
        raise suite.error(
            base + ("space", key),
            f"recipe {m.recipe!r} fixes the LR schedule at each batch (a reference point, not tuned); "
            f"give this method `tuning: null` or tune only hparams.*",
        )


def _lr_for(suite: Suite, i: int, mc: MethodCfg | None = None) -> LrCfg:
    m = mc or suite.cfg.matrix.methods[i]
    merged = {**suite.cfg.lr.model_dump(exclude_unset=True), **m.lr}
    try:
        lr = LrCfg.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        key = err["loc"][0] if err["loc"] else ""
        where = ("matrix", "methods", i, "lr", key) if key in m.lr else ("lr", key)
        raise suite.error(where, "unknown key" if err["type"] == "extra_forbidden" else err["msg"]) from None
    if lr.rule == "table" and not lr.table:
        raise suite.error(("lr", "rule"), "rule 'table' needs an lr.table {global batch: LR}")
    if lr.rule != "table" and lr.base_lr is None:
        raise suite.error(("lr", "base_lr"), f"rule {lr.rule!r} needs base_lr")
    return lr


def _data_spec(suite: Suite, check_data: bool) -> tuple[DataSpec, str | None]:
    """Resolve the data block; returns the spec and a warning (data not checked) or raises.

    A folder that is present is checked against what the runs will expect before anything
    launches: the same classes in train/ and val/, as many as the model's outputs, and the
    image counts (the suite's, else the workload's canonical set)."""
    w = suite.cfg.workload
    base = WORKLOADS[w.name]
    d = w.data
    classes = w.classes or base.classes
    train = d.train_samples or base.train_samples
    evals = d.eval_samples or base.eval_samples
    spec = dict(
        kind=d.kind,
        path=None,
        image_size=w.image_size or base.image_size,
        classes=classes,
        train_samples=train,
        eval_samples=evals,
        augment=w.augment or base.augment,
    )
    if d.kind == "synthetic":  # the workload's counts unless the suite names others
        return DataSpec.model_validate(spec), None
    if not d.path:
        raise suite.error(("workload", "data"), "kind 'folder' needs a path")
    path, unset = expand_env(d.path)
    if path is None:
        problem = f"environment variable {unset} is not set (data path {d.path!r})"
    elif not (Path(path) / "train").is_dir() or not (Path(path) / "val").is_dir():
        problem = f"data directory {path!r} does not exist or lacks train/ and val/"
        if w.name == "digits":
            problem += " (create it with `lbbench data digits`)"
    else:
        spec["path"] = path
        spec |= _check_folder(suite, Path(path), base, classes, train, evals)
        return DataSpec.model_validate(spec), None
    if check_data:
        raise suite.error(("workload", "data", "path"), problem)
    spec["path"] = path
    return DataSpec.model_validate(spec), problem


def _check_folder(suite: Suite, root: Path, base: Workload, classes: int, train: int, evals: int) -> dict[str, Any]:
    """Class folders and image counts against the expectation; the data's fingerprint."""
    from lbbench.data.layout import data_stats

    where = ("workload", "data", "path")
    stats = data_stats(root)
    for split, s in (("train", stats.train), ("val", stats.val)):
        if len(s.classes) != classes:
            raise suite.error(
                where,
                f"{root / split} holds {len(s.classes)} class folders but the model has {classes} outputs "
                f"(workload {base.name!r}{', classes set by the suite' if suite.cfg.workload.classes else ''})",
            )
    if stats.train.classes != stats.val.classes:
        only = sorted(set(stats.train.classes) ^ set(stats.val.classes))
        raise suite.error(where, f"{root}/train and {root}/val have different class folders: {', '.join(only[:5])}")
    for split, s, want in (("train", stats.train, train), ("val", stats.val, evals)):
        if s.total != want:
            source = (
                "the suite's data block"
                if suite.cfg.workload.data.model_fields_set & {"train_samples", "eval_samples"}
                else f"workload {base.name!r}"
            )
            raise suite.error(
                where,
                f"{root / split} holds {s.total} images but {source} expects {want}; set "
                "workload.data.train_samples/eval_samples to run on a different set",
            )
    canonical = (
        classes == base.classes
        and (train, evals) == (base.train_samples, base.eval_samples)
        and (base.data_structure is None or stats.structure() == base.data_structure)
    )
    return {"fingerprint": stats.fingerprint(), "canonical": canonical}


def cells_of(suite: Suite) -> list[dict[str, Any]]:
    """The matrix's cells (method label, global batch, framework, seed, np), excludes removed and
    includes added, in matrix order."""
    cfg = suite.cfg
    m = cfg.matrix
    labels = [mc.label or mc.name for mc in m.methods]
    cells = [
        dict(method=lab, global_batch=b, framework=f, seed=s, np=n)
        for lab, b, f, s, n in itertools.product(labels, m.global_batch, m.frameworks, m.seeds, m.workers)
    ]
    cells = [c for c in cells if not any(_matches(c, x) for x in cfg.exclude)]
    defaults = dict(
        method=labels[0], global_batch=m.global_batch[0], framework=m.frameworks[0], seed=m.seeds[0], np=m.workers[0]
    )
    for inc in cfg.include:
        c = {**defaults, **inc.model_dump(exclude_none=True)}
        if c not in cells:
            cells.append(c)
    if not cells:
        where = ("exclude",) if cfg.exclude else ("matrix",)
        raise suite.error(where, "the suite expands to no runs (every cell of the matrix is excluded)")
    return cells


def expand(suite: Suite, check_data: bool = False) -> tuple[list[RunSpec], list[str]]:
    """The suite's runs, in matrix order; plus warnings (e.g. data not present for a plan).
    Trials of an adaptive study (``sampler: tpe``) are not here: they are chosen while the study
    runs (lbbench/suite/adaptive.py)."""
    data, warning = _data_spec(suite, check_data)
    labels = [mc.label or mc.name for mc in suite.cfg.matrix.methods]
    runs = []
    for c in cells_of(suite):
        i = labels.index(str(c["method"]))
        study = tuning_of(suite, i)
        if study is None:
            runs.append(_resolve(suite, i, c, data, WORKLOADS[suite.cfg.workload.name]))
        elif study.sampler == "halton":
            for s in range(study.studies):
                for t, values in enumerate(tuning.trials(study, s)):
                    runs.append(trial_run(suite, i, c, data, values, s, t))
        else:  # adaptive: validated now, its trials chosen while it runs
            _resolve(suite, i, c, data, WORKLOADS[suite.cfg.workload.name])
    return runs, [warning] if warning else []


def trial_run(
    suite: Suite, i: int, c: dict[str, Any], data: DataSpec, values: dict[str, Any], s: int, t: int
) -> RunSpec:
    """Trial ``t`` of study ``s`` of cell ``c`` (method entry ``i``): the entry with the sampled
    values applied, an ordinary run whose id derives from them."""
    mc = suite.cfg.matrix.methods[i]
    trial_mc = mc.model_copy(update=tuning.apply(values, mc.hparams, mc.lr))
    run = _resolve(suite, i, c, data, WORKLOADS[suite.cfg.workload.name], trial_mc)
    return run.model_copy(update=dict(study=s, trial=t, tuned=values)).with_id()


def data_of(suite: Suite, check_data: bool = False) -> DataSpec:
    return _data_spec(suite, check_data)[0]


def tuning_of(suite: Suite, i: int) -> TuningCfg | None:
    """Method entry i's study: its own tuning block, else the suite's (``tuning: null`` in the
    entry leaves it untuned)."""
    mc = suite.cfg.matrix.methods[i]
    return mc.tuning if "tuning" in mc.model_fields_set else suite.cfg.tuning


def _matches(cell: dict[str, Any], pattern: Any) -> bool:
    return all(cell[k] == v for k, v in pattern.model_dump(exclude_none=True).items())


def _resolve(
    suite: Suite, i: int, c: dict[str, Any], data: DataSpec, base: Workload, mc: MethodCfg | None = None
) -> RunSpec:
    """The run of cell ``c`` for method entry ``i`` (or ``mc``: that entry with a trial's values)."""
    cfg, w, m = suite.cfg, suite.cfg.workload, suite.cfg.matrix
    mc = mc or m.methods[i]
    info = get_method(mc.name)
    B, n = c["global_batch"], c["np"]
    where = ("matrix", "global_batch", m.global_batch.index(B)) if B in m.global_batch else ("include",)
    if B > data.train_samples:
        raise suite.error(where, f"global batch {B} exceeds the {data.train_samples} training samples")
    recipe = RECIPES[mc.recipe](B) if mc.recipe else None
    if recipe is not None:
        if mc.lr:
            raise suite.error(
                ("matrix", "methods", i, "lr"),
                f"recipe {mc.recipe!r} sets every LR schedule field at each batch; remove this method's lr block",
            )
        given = {k: v for k, v in recipe.hparams.items() if k in info.hparams}
        lrs = LrSpec(milestones=(), decay_factor=0.1, **recipe.lr)
        max_epochs = recipe.max_epochs
    else:
        given, max_epochs = {}, w.max_epochs or base.max_epochs
        lrs = _lr_spec(suite, i, B, max_epochs, mc)
    hp = resolve_hparams(mc.name, {**given, **mc.hparams})
    if cfg.run.perf.compile and not info.step_kind.compiles:
        raise suite.error(
            ("run", "perf", "compile"),
            f"method {mc.name!r} ({info.step} step) cannot run compiled: "
            + ("its double backward" if info.step == "curvature" else "its factor-capture hooks")
            + " do not work through torch.compile / XLA; leave compile off for this suite",
        )
    local, accum, bn_span = _split(suite, B, n, where, recipe)
    source = recipe.source if recipe else ""
    if recipe and recipe.bn_span and bn_span != recipe.bn_span:
        source += f"; BN span {bn_span}: the recipe's {recipe.bn_span} does not fit {B} / {n} workers"
    sched = schedule_facts(lrs, steps_per_epoch(data.train_samples, B))
    reason = info.closed_division(hp, sched)
    discard = batch_sched = None
    if mc.discard_small_loss:
        d = mc.discard_small_loss
        discard = DiscardSpec(fraction=d.fraction, epochs=d.epochs or 0.3 * max_epochs, scope=d.scope)
        reason = reason or "discards small-loss samples"
    if mc.batch_schedule:
        batch_sched = _batch_schedule(suite, i, mc.batch_schedule, B, n * local, lrs, data.train_samples)
        reason = reason or f"batch-size schedule {mc.batch_schedule.kind}"
    return RunSpec(
        suite=suite.name,
        method=mc.name,
        label=c["method"],
        hparams=hp,
        division="closed" if reason is None else "open",
        division_reason=reason or "",
        framework=c["framework"],
        model=w.model or base.model,
        data=data,
        global_batch=B,
        np=n,
        local_batch=local,
        accum=accum,
        bn_span=bn_span,
        seed=c["seed"],
        lr=lrs,
        label_smoothing=next(x for x in (mc.label_smoothing, w.label_smoothing, base.label_smoothing) if x is not None),
        target_top1=w.target_top1 or base.target_top1,
        eval_every=w.eval_every or base.eval_every,
        eval_offset=w.eval_offset or 0,
        max_epochs=max_epochs,
        stop_at_target=cfg.run.stop_at_target,
        diag_every=cfg.run.diag_every,
        eval_batch=cfg.run.eval_batch,
        discard=discard,
        batch_schedule=batch_sched,
        recipe=source,
        recipe_not_reproduced=recipe.not_reproduced if recipe else (),
        checkpoint_every=cfg.run.checkpoint_every,
        keep_checkpoints=cfg.run.keep_checkpoints,
        perf=cfg.run.perf,
    ).with_id()


def _split(suite: Suite, B: int, n: int, where: tuple[Any, ...], recipe: Recipe | None) -> tuple[int, int, int]:
    """(local batch, accum, BN span) of global batch B on n workers. A recipe's BN span wins over
    the matrix's: within the matrix's micro-batch when it divides it (ghost BN: the same
    statistics), else as the micro-batch when B / n is a multiple of it, else the largest divisor
    of the micro-batch not above it (the caller records that in the recipe string)."""
    m = suite.cfg.matrix
    if n <= 0:
        raise suite.error(("matrix", "workers"), f"np must be positive, got {n}")
    if m.local_batch:
        local = m.local_batch
        if B % (n * local):
            raise suite.error(where, f"global batch {B} is not divisible by np x local_batch = {n} x {local}")
    else:
        accum = m.accum or 1
        if B % (n * accum):
            raise suite.error(where, f"global batch {B} is not divisible by np x accum = {n} x {accum}")
        local = B // (n * accum)
    bn_span = m.bn_span or local
    if recipe is not None and recipe.bn_span:
        if local % recipe.bn_span == 0:
            bn_span = recipe.bn_span
        elif B % n == 0 and (B // n) % recipe.bn_span == 0:
            local = bn_span = recipe.bn_span
        else:
            bn_span = max(d for d in range(1, min(recipe.bn_span, local) + 1) if local % d == 0)
    if local % bn_span:
        raise suite.error(
            ("matrix", "bn_span"), f"bn_span {bn_span} must divide the local batch {local} (global batch {B})"
        )
    return local, B // (n * local), bn_span


def _lr_spec(suite: Suite, i: int, B: int, max_epochs: int, mc: MethodCfg | None = None) -> LrSpec:
    lr = _lr_for(suite, i, mc)
    if lr.rule == "table":
        assert lr.table is not None
        if B not in lr.table:
            raise suite.error(("lr", "table"), f"no LR for global batch {B}")
        peak = lr.table[B]
    else:
        assert lr.base_lr is not None
        peak = scaled_lr(lr.rule, lr.base_lr, lr.base_batch, B)
    train_epochs = lr.train_epochs or max_epochs
    kind, milestones = lr.schedule, tuple(lr.milestones or ())
    if kind == "goyal":
        kind, milestones = "step", milestones or goyal_milestones(train_epochs)
    return LrSpec(
        schedule=kind,
        peak_lr=peak,
        warmup_epochs=lr.warmup_epochs,
        warmup_start_lr=lr.warmup_start_lr,
        end_lr=lr.end_lr if lr.end_factor is None else lr.end_factor * peak,
        poly_power=lr.poly_power,
        milestones=milestones,
        decay_factor=lr.decay_factor,
        train_epochs=train_epochs,
        decay_start_epochs=lr.decay_start_epochs,
    )


def _batch_schedule(
    suite: Suite, i: int, bs: BatchScheduleCfg, B: int, per_accum: int, lr: LrSpec, n_train: int
) -> BatchScheduleSpec:
    where = ("matrix", "methods", i, "batch_schedule")
    if bs.kind == "small_first":
        if not bs.first_batch or not bs.first_lr:
            raise suite.error(where, "small_first needs first_batch and first_lr")
        if bs.first_batch % per_accum:
            raise suite.error(
                where + ("first_batch",),
                f"first_batch {bs.first_batch} is not divisible by np x local batch = {per_accum}",
            )
        return BatchScheduleSpec(kind="small_first", first_batch=bs.first_batch, first_lr=bs.first_lr)
    if lr.schedule != "step":
        raise suite.error(where, "increase replaces the LR drops of a step (or goyal) schedule")
    # "Where the LR would drop by f, multiply B by f" (Smith et al.; docs/methods.md section 6)
    factor = 1.0 / lr.decay_factor
    if bs.factor is not None and abs(bs.factor - factor) > 1e-9 * factor:
        raise suite.error(
            where + ("factor",),
            f"factor {bs.factor:g} must be the LR drop it replaces, 1 / decay_factor = {factor:g} "
            "(leave it out, or change lr.decay_factor)",
        )
    cap = bs.max_batch or n_train
    if cap < per_accum:
        raise suite.error(where + ("max_batch",), f"max_batch {cap} is below np x local batch = {per_accum}")
    return BatchScheduleSpec(kind="increase", factor=factor, max_batch=cap)

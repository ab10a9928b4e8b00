"""`lbbench import-mlperf`: published MLPerf Training results as lbbench result directories.

A submission keeps a system's runs as ``<org>/results/<system>/<benchmark>/result_*.txt`` and
its description as ``<org>/systems/<system>.json``; a copy may also hold the result files
straight in ``<system>/``. Each run becomes one run directory

    RESULTS/mlperf-v<round>/<system>-<result file stem>/
        summary.json     the RunSummary lbbench's tables read (published fields filled in)
        published.json   provenance: round, ruleset, submitter, system, file and its sha256,
                         the compliance checker's verdict, the system description, the
                         system's MLPerf score and RCP factor
        metrics.jsonl    the evaluation curve (epoch, top-1)
        mllog.txt        the result file, unchanged

Every run is checked with MLPerf's compliance checker on import; a run that fails it (a
non-converged one does) is imported with status not_reached and the checker's words as its
reason - never dropped. Framework-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbbench.mlperf import scoring
from lbbench.store.files import atomic_write_text, write_json
from lbbench.store.summary import RunSummary

PUBLISHED_FILE = "published.json"
IMAGENET_TRAIN = 1_281_167
TARGETS = {"resnet": 0.759}


class ImportError_(Exception):
    """A path that holds no MLPerf result files, or a round the installed checker does not know."""


@dataclass
class Parsed:
    """What lbbench reads from one result file."""

    values: dict[str, Any]  # the first value of each key
    evals: list[tuple[float, float, float]]  # (epoch_num, accuracy, time_ms)
    run_start: float | None
    run_stop: float | None
    stop_status: str | None
    throughputs: list[float]


def find_systems(paths: Iterable[Path]) -> list[list[Path]]:
    """The result files under each path, one list per folder that holds any (a system's runs)."""
    groups: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ImportError_(f"{p} does not exist")
        files = [p] if p.is_file() else sorted(p.rglob("result_*.txt"))
        for f in files:
            groups.setdefault(f.parent, []).append(f)
    if not groups:
        raise ImportError_(f"no MLPerf result files (result_*.txt) under {', '.join(map(str, paths))}")
    return [sorted(v) for _, v in sorted(groups.items())]


def system_of(folder: Path) -> tuple[str, Path | None]:
    """(system name, its systems/<system>.json if found in an ancestor)."""
    name = folder.parent.name if folder.name in BENCHMARK_FOLDERS else folder.name
    for anc in folder.parents:
        cand = anc / "systems" / f"{name}.json"
        if cand.is_file():
            return name, cand
    return name, None


BENCHMARK_FOLDERS = {"resnet", "bert", "ssd", "unet3d", "maskrcnn", "rnnt", "dlrm", "dlrm_dcnv2", "gpt3"}


def ruleset_of(path: Path, override: str | None) -> str:
    """The round's ruleset: given, else from a 'training_results_vX.Y' (or 'vX.Y') in the path."""
    from mlperf_logging.compliance_checker.mlp_compliance import rule_choices

    if override:
        ruleset = override
    else:
        m = re.search(r"v(\d+)\.(\d+)(?:\.(\d+))?", str(path.resolve()))
        if not m:
            raise ImportError_(f"{path}: cannot tell the MLPerf round from the path; give --ruleset (e.g. 4.0.0)")
        ruleset = f"{m[1]}.{m[2]}.{m[3] or 0}"
    if ruleset not in rule_choices():
        known = ", ".join(sorted(rule_choices()))
        raise ImportError_(f"{path}: the installed mlperf-logging does not know ruleset {ruleset}; known: {known}")
    return ruleset


def check(file: Path, ruleset: str) -> tuple[bool, str]:
    """MLPerf's compliance checker on one result file: (passed, its messages)."""
    from mlperf_logging.compliance_checker import mlp_compliance

    checker = mlp_compliance.make_checker("training", ruleset, True, False)
    with _captured_warnings() as said:
        valid = checker.check_file(str(file), f"training_{ruleset}/common.yaml")
    messages = [str(m).strip() for m in checker.warnings.values()] + [m for m in said if "ailed" in m]
    return bool(valid), "; ".join(dict.fromkeys(messages)) or ("passed" if valid else "failed")


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[str]]:
    """MLPerf's checkers report through the root logger (every rule they run, at INFO): their
    warnings are collected here instead of printed."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage().strip())

    root = logging.getLogger()
    handler, level, handlers = Collect(logging.WARNING), root.level, root.handlers[:]
    root.handlers, root.level = [handler], logging.WARNING
    try:
        yield said
    finally:
        root.handlers, root.level = handlers, level


def parse(file: Path, ruleset: str) -> Parsed:
    from mlperf_logging.compliance_checker.mlp_parser import parse_file

    lines, _ = parse_file(str(file), ruleset=ruleset)
    values: dict[str, Any] = {}
    evals, throughputs = [], []
    start = stop = None
    status = None
    for ln in lines:
        v = ln.value if isinstance(ln.value, dict) else {"value": ln.value}
        values.setdefault(ln.key, v.get("value"))
        meta = v.get("metadata") or {}
        if ln.key == "eval_accuracy" and "epoch_num" in meta:
            evals.append((float(meta["epoch_num"]), float(v["value"]), float(ln.timestamp)))
        elif ln.key == "run_start":
            start = float(ln.timestamp)
        elif ln.key == "run_stop":
            stop, status = float(ln.timestamp), meta.get("status")
        elif ln.key == "tracked_stats" and isinstance(v.get("value"), dict) and "throughput" in v["value"]:
            throughputs.append(float(v["value"]["throughput"]))
    return Parsed(values, evals, start, stop, status, throughputs)


def _framework(desc: dict[str, Any]) -> str:
    """A short framework name: 'MxNet NVIDIA Release 24.04' -> 'mxnet'."""
    name = str(desc.get("framework_name") or desc.get("framework") or "unknown")
    known = ("mxnet", "pytorch", "tensorflow", "jax", "tinygrad", "paddle", "mindspore")
    low = name.lower()
    return next((k for k in known if k in low), re.split(r"[\s_]", low)[0] or "unknown")


def accelerators(desc: dict[str, Any]) -> tuple[str, int]:
    """(accelerator model, count) from a system description."""

    def num(key: str) -> int:
        m = re.match(r"\s*(\d+)", str(desc.get(key, "")))
        return int(m[1]) if m else 0

    per_node = num("accelerators_per_node")
    return str(desc.get("accelerator_model_name") or "unknown"), num("number_of_nodes") * per_node


def import_paths(paths: list[Path], results: Path, ruleset: str | None = None) -> list[dict[str, Any]]:
    """Imports every system found under ``paths``; returns one record per system (its name,
    run dirs, score)."""
    out = []
    for files in find_systems(paths):
        out.append(import_system(files, results, ruleset_of(files[0], ruleset)))
    return out


def import_system(files: list[Path], results: Path, ruleset: str) -> dict[str, Any]:
    system, desc_file = system_of(files[0].parent)
    desc: dict[str, Any] = json.loads(desc_file.read_text()) if desc_file else {}
    parsed = [(f, parse(f, ruleset), *check(f, ruleset)) for f in files]
    benchmark = str(parsed[0][1].values.get("submission_benchmark") or "resnet")
    minutes = [
        (p.run_stop - p.run_start) / 60_000
        if ok and p.stop_status == "success" and p.run_start and p.run_stop
        else None
        for _, p, ok, _ in parsed
    ]
    division = str(parsed[0][1].values.get("submission_division") or desc.get("division") or "closed")
    with _captured_warnings():
        rcp = (
            scoring.rcp_normalisation(files, ruleset) if division == "closed" else (1.0, "open division: no RCP check")
        )
    sc = scoring.score(minutes, benchmark, rcp)
    round_ = ".".join(ruleset.split(".")[:2])
    accel, n_accel = accelerators(desc)
    suite_dir = results / f"mlperf-v{round_}"
    run_dirs = []
    for (f, p, ok, messages), mins in zip(parsed, minutes):
        rdir = suite_dir / f"{system}-{f.stem}"
        if rdir.exists():
            shutil.rmtree(rdir)  # a re-import replaces the earlier one (the source is the record)
        rdir.mkdir(parents=True)
        shutil.copyfile(f, rdir / "mllog.txt")
        provenance = {
            "round": round_,
            "ruleset": ruleset,
            "benchmark": benchmark,
            "submitter": desc.get("submitter") or p.values.get("submission_org"),
            "system": system,
            "system_name": desc.get("system_name") or system,
            "division": division,
            "file": str(f.resolve()),
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            "compliant": ok,
            "checker": messages,
            "system_description": desc or None,
            "system_score_minutes": sc.minutes,
            "system_olympic_minutes": sc.olympic_minutes,
            "rcp_factor": sc.rcp_factor,
            "rcp_verdict": sc.rcp_verdict,
        }
        write_json(rdir / PUBLISHED_FILE, provenance)
        summary = _summary(system, round_, f, p, ok, messages, mins, division, accel, n_accel, desc, benchmark)
        summary.write(rdir)
        atomic_write_text(
            rdir / "metrics.jsonl",
            "".join(json.dumps({"kind": "epoch", "epoch": e, "top1": a}) + "\n" for e, a, _ in p.evals),
        )
        run_dirs.append(rdir)
    return {"system": system, "ruleset": ruleset, "runs": run_dirs, "score": sc, "division": division}


def _summary(
    system: str,
    round_: str,
    file: Path,
    p: Parsed,
    compliant: bool,
    messages: str,
    minutes: float | None,
    division: str,
    accel: str,
    n_accel: int,
    desc: dict[str, Any],
    benchmark: str,
) -> RunSummary:
    target = TARGETS.get(benchmark, 0.0)
    batch = int(p.values.get("global_batch_size") or 0)
    train = int(p.values.get("train_samples") or IMAGENET_TRAIN)
    converged = minutes is not None
    reached = next(((e, a, t) for e, a, t in p.evals if a >= target), None) if converged else None
    epochs = p.evals[-1][0] if converged and p.evals else None  # MLPerf: the last eval before run_stop
    samples = round(epochs * train) if epochs is not None else None
    start = p.run_start or 0.0
    opt = str(p.values.get("opt_name") or "unknown")
    return RunSummary(
        run_id=f"{system}-{file.stem}",
        suite=f"mlperf-v{round_}",
        status="success" if converged else "not_reached",
        method=opt,
        label=opt,
        global_batch=batch,
        framework=_framework(desc),
        np=n_accel or 1,
        accum=int(p.values.get("gradient_accumulation_steps") or 1),
        seed=int(p.values.get("seed") or 0),
        division=division,
        target_top1=target,
        wall_s=((p.run_stop or start) - start) / 1000,
        best_top1=max((a for _, a, _ in p.evals), default=None),
        epochs_to_target=math.ceil(epochs) if epochs is not None else None,
        samples_to_target=samples,
        steps_to_target=math.ceil(samples / batch) if samples is not None and batch else None,
        time_to_target_s=(reached[2] - start) / 1000 if reached else None,
        time_to_target_valid=True if reached else None,
        time_to_train_s=minutes * 60 if minutes is not None else None,
        images_per_s=sum(p.throughputs) / len(p.throughputs) if p.throughputs else None,
        device=accel,
        accelerator=accel,
        accelerators=n_accel or None,
        published=True,
        reason=None if compliant else f"MLPerf compliance checker: {messages}",
    )


def is_published(rdir: Path) -> bool:
    return (rdir / PUBLISHED_FILE).is_file()


def provenance(rdir: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((rdir / PUBLISHED_FILE).read_text())
    return doc

"""Adaptive tuning studies (``tuning: {sampler: tpe}``): Optuna's TPE sampler chooses each
trial from the trials that have finished, so the trials are not known at plan time.

The study of each cell lives in the results directory (``RESULTS/SUITE/tuning.journal``,
Optuna's journal file storage with file locks), so several `lbbench run` processes - on several
nodes sharing the file system - add trials to one study without exceeding its budget. A trial
is an ordinary run: its id derives from its sampled values, it resumes, skips when done, locks
and fails alone; Optuna's trial number is its ``trial`` index. The objective is minimised: the
steps to the target, or - for a trial that missed it - a number above any reaching trial's
(the run's step budget times 2 - best top-1 / target), so reaching first, then how close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbbench.spec import DataSpec, RunSpec
from lbbench.store.files import run_dir
from lbbench.store.summary import RunSummary, summary_or_damage
from lbbench.suite.config import Distribution, TuningCfg
from lbbench.suite.expand import Suite, cells_of, data_of, trial_run, tuning_of

JOURNAL = "tuning.journal"


@dataclass
class AdaptiveCell:
    i: int  # method entry
    cell: dict[str, Any]
    cfg: TuningCfg
    study: int

    @property
    def name(self) -> str:
        c = self.cell
        return f"{c['method']}-b{c['global_batch']}-{c['framework']}-np{c['np']}-s{c['seed']}-study{self.study}"


def adaptive_cells(suite: Suite) -> list[AdaptiveCell]:
    labels = [mc.label or mc.name for mc in suite.cfg.matrix.methods]
    out = []
    for c in cells_of(suite):
        i = labels.index(str(c["method"]))
        cfg = tuning_of(suite, i)
        if cfg is not None and cfg.sampler == "tpe":
            out += [AdaptiveCell(i, c, cfg, s) for s in range(cfg.studies)]
    return out


def _distribution(d: Distribution) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if d.choice is not None:
        return CategoricalDistribution(d.choice)
    if d.log_uniform is not None:
        return FloatDistribution(*d.log_uniform, log=True)
    if d.uniform is not None:
        return FloatDistribution(*d.uniform)
    if d.int_uniform is not None:
        return IntDistribution(*d.int_uniform)
    assert d.one_minus_log_uniform is not None  # searched as 1 - x, log-uniform
    lo, hi = d.one_minus_log_uniform
    return FloatDistribution(1 - hi, 1 - lo, log=True)


def _values(cfg: TuningCfg, params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: 1 - params[k] if cfg.space[k].one_minus_log_uniform is not None else params[k] for k in sorted(cfg.space)
    }


def objective(spec: RunSpec, s: RunSummary) -> float:
    if s.status == "success" and s.steps_to_target is not None:
        return float(s.steps_to_target)
    budget = spec.max_epochs * spec.steps_per_epoch
    return budget * (2.0 - min(1.0, (s.best_top1 or 0.0) / spec.target_top1))


def _study(suite: Suite, results: Path, a: AdaptiveCell) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(results) / suite.name / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(
        seed=a.cfg.seed * 1009 + a.study, n_startup_trials=max(1, min(10, a.cfg.trials // 2))
    )
    return optuna.create_study(
        study_name=a.name,
        storage=JournalStorage(JournalFileBackend(str(path))),
        sampler=sampler,
        direction="minimize",
        load_if_exists=True,
    )


def _spec(suite: Suite, a: AdaptiveCell, trial: Any, data: DataSpec) -> RunSpec:
    values = _values(a.cfg, trial.params)
    return trial_run(suite, a.i, a.cell, data, values, a.study, trial.number)


def known_trials(suite: Suite, results: Path) -> list[RunSpec]:
    """The trials every adaptive study has asked for so far (finished or not)."""
    cells = adaptive_cells(suite)
    if not cells or not (Path(results) / suite.name / JOURNAL).exists():
        return []
    data = data_of(suite)  # once: for a folder it checks the data's layout and fingerprint
    return [_spec(suite, a, t, data) for a in cells for t in _study(suite, results, a).get_trials(deepcopy=False)]


def next_trials(suite: Suite, results: Path, busy: Callable[[RunSpec], bool] = lambda spec: False) -> list[RunSpec]:
    """One run per adaptive study still short of its budget: first every finished trial is told
    its objective (a failed or damaged one is marked failed and counts against the budget);
    then an asked trial whose run has not finished and that no other process is training
    (``busy``) is returned again (it resumes), or a new trial is asked."""
    from optuna.trial import TrialState

    cells = adaptive_cells(suite)
    if not cells:
        return []
    data = data_of(suite)  # once: for a folder it checks the data's layout and fingerprint
    out = []
    for a in cells:
        study = _study(suite, results, a)
        pending = None
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            spec = _spec(suite, a, t, data)
            s, damage = summary_or_damage(run_dir(results, suite.name, spec.run_id))
            if s is not None and s.done:
                study.tell(t.number, objective(spec, s))
            elif (s is not None and s.status in ("failed", "timeout")) or damage:
                study.tell(t.number, state=TrialState.FAIL)
            elif pending is None and not busy(spec):
                pending = spec
        if pending is not None:
            out.append(pending)
        elif len(study.trials) < a.cfg.trials:
            trial = study.ask({k: _distribution(d) for k, d in sorted(a.cfg.space.items())})
            out.append(_spec(suite, a, trial, data))
    return out


def planned_count(suite: Suite) -> int:
    """Trials the adaptive studies will run in all (their budgets)."""
    return sum(a.cfg.trials for a in adaptive_cells(suite))


def stand_ins(suite: Suite) -> list[RunSpec]:
    """For costing a plan: each adaptive trial as its cell's untuned run."""
    data = data_of(suite)
    out = []
    for a in adaptive_cells(suite):
        base = trial_run(suite, a.i, a.cell, data, {}, a.study, 0)
        out += [base.model_copy(update=dict(trial=t)) for t in range(a.cfg.trials)]
    return out

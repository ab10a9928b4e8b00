"""The final-seed runs of tuning studies: once every trial of a cell has finished, its winner
(lbbench/report/selection.py: fewest steps to target, ...) is re-run with ``final_seeds`` new
seeds (Shallue et al. and AlgoPerf report a tuned point over fresh seeds, not the lucky trial).

They cannot be planned before the trials have run, so they are derived from the results
directory: `lbbench run` adds them after its trials finish (and on any later invocation),
`lbbench run --submit` submits them once the trials' jobs are done, and `lbbench plan` lists
those already known. Their run ids derive, like every run's, from the resolved spec: the
winner's values, the new seed and ``final_of`` ("study.trial" of the winner).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lbbench.report.selection import winner
from lbbench.spec import RunSpec
from lbbench.store.files import run_dir
from lbbench.store.summary import summary_or_damage
from lbbench.suite.expand import Suite, tuning_of


def final_seed_values(suite: Suite, n: int) -> list[int]:
    """``n`` seeds none of the suite's trials use: after the matrix's largest seed."""
    first = max(suite.cfg.matrix.seeds) + 1
    return list(range(first, first + n))


def final_runs(suite: Suite, runs: list[RunSpec], results: Path) -> list[RunSpec]:
    """The final-seed runs of every tuned cell whose trials have all finished (a study per
    winner: with several studies, each study's winner is re-run)."""
    labels = [mc.label or mc.name for mc in suite.cfg.matrix.methods]
    cells: dict[tuple[str, int, str, int, int, int], list[RunSpec]] = defaultdict(list)
    for r in runs:
        if r.trial is not None:
            cells[(r.label, r.global_batch, r.framework, r.np, r.seed, r.study or 0)].append(r)
    out: list[RunSpec] = []
    for (label, *_), trials in cells.items():
        cfg = tuning_of(suite, labels.index(label))
        if cfg is None or cfg.final_seeds == 0 or len(trials) < cfg.trials:
            continue  # untuned, no final seeds, or an adaptive study short of its budget
        records = []
        for t in trials:
            s, _ = summary_or_damage(run_dir(results, suite.name, t.run_id))
            if s is None or not s.done:  # not run yet, running, failed or damaged: not finished
                break
            records.append(s.model_dump())
        else:
            best, _ = winner(records)
            if best is None:
                continue
            spec = next(t for t in trials if t.run_id == best["run_id"])
            for seed in final_seed_values(suite, cfg.final_seeds):
                out.append(
                    spec.model_copy(
                        update=dict(seed=seed, study=None, trial=None, final_of=f"{spec.study or 0}.{spec.trial}")
                    ).with_id()
                )
    return out


def planned_finals(suite: Suite, runs: list[RunSpec]) -> list[RunSpec]:
    """Stand-ins for every final-seed run the suite will have, known or not (each a copy of its
    cell's first trial with a final seed): for counting and costing plans before any trial ran."""
    labels = [mc.label or mc.name for mc in suite.cfg.matrix.methods]
    firsts: dict[tuple[str, int, str, int, int, int], RunSpec] = {}
    for r in runs:
        if r.trial is not None:
            firsts.setdefault((r.label, r.global_batch, r.framework, r.np, r.seed, r.study or 0), r)
    out = []
    for (label, *_), first in firsts.items():
        cfg = tuning_of(suite, labels.index(label))
        for seed in final_seed_values(suite, cfg.final_seeds if cfg else 0):
            out.append(first.model_copy(update=dict(seed=seed, study=None, trial=None, final_of="?")))
    return out

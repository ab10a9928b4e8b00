"""Which trial of a tuning study wins, and the cell's score over studies (framework-free,
written once; lbbench/report/tables.py and the CI gate use it).

Per cell and study the winner is the trial with the fewest steps to the target; ties go to
fewer epochs, then to the higher best top-1. When no trial reached the target, the trial with
the highest best top-1 is reported, marked "not reached". Over several studies the cell's
score is AlgoPerf's: the median over studies of each study's fastest trial, a study whose
trials all missed counting as infinite. Where the winner was re-run with final seeds
(lbbench/suite/finals.py), the cell's row is those runs (their olympic mean), not the trial.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from lbbench.report.stats import olympic_mean

Record = dict[str, Any]  # one run's summary fields


def _reached(r: Record) -> bool:
    return r.get("status") == "success" and r.get("steps_to_target") is not None


def _speed(r: Record) -> tuple[float, float, float]:
    return (r["steps_to_target"], r.get("epochs_to_target") or 0, -(r.get("best_top1") or 0.0))


def winner(trials: list[Record]) -> tuple[Record | None, bool]:
    """(winning trial, whether it reached the target); (None, False) with no finished trial."""
    done = [r for r in trials if r.get("status") in ("success", "not_reached", "diverged")]
    reached = [r for r in done if _reached(r)]
    if reached:
        best = min(
            reached, key=lambda r: (r["steps_to_target"], r.get("epochs_to_target") or 0, -(r.get("best_top1") or 0))
        )
        return best, True
    if not done:
        return None, False
    return max(done, key=lambda r: r.get("best_top1") or 0.0), False


def algoperf_steps(studies: dict[int, list[Record]]) -> float:
    """The median over studies of the fastest trial's steps to target (a study that never
    reached it: infinity)."""
    per_study = []
    for trials in studies.values():
        best, ok = winner(trials)
        per_study.append(float(best["steps_to_target"]) if ok and best is not None else math.inf)
    return float(statistics.median(per_study)) if per_study else math.inf


@dataclass
class CellStudy:
    method: str
    global_batch: int
    framework: str
    trials: list[Record] = field(default_factory=list)
    finals: list[Record] = field(default_factory=list)  # the winner re-run with final seeds

    @property
    def studies(self) -> dict[int, list[Record]]:
        out: dict[int, list[Record]] = defaultdict(list)
        for r in self.trials:
            out[r.get("study") or 0].append(r)
        return dict(out)


def studies(summaries: list[Record]) -> list[CellStudy]:
    """The tuning trials of each cell (runs with a trial index), by cell."""
    cells: dict[tuple[str, int, str], CellStudy] = {}
    for s in summaries:
        if s.get("trial") is None and not s.get("final_of"):
            continue
        key = (s.get("label") or s["method"], s["global_batch"], s["framework"])
        c = cells.setdefault(key, CellStudy(*key))
        (c.finals if s.get("final_of") else c.trials).append(s)
    return [cells[k] for k in sorted(cells) if cells[k].trials]


def tuning_rows(summaries: list[Record]) -> list[Record]:
    """A row per tuned cell: the budget used, how many trials reached the target, the winner
    (its steps, epochs, best top-1, sampled values) and AlgoPerf's median over studies."""
    out = []
    for c in studies(summaries):
        best, ok = winner(c.trials)
        reached = sorted(r["steps_to_target"] for r in c.trials if _reached(r))
        out.append(
            dict(
                method=c.method,
                global_batch=c.global_batch,
                framework=c.framework,
                studies=len(c.studies),
                trials=len(c.trials),
                reached=sum(_reached(r) for r in c.trials),
                winner=None if best is None else f"{best.get('study') or 0}.{best.get('trial')}",
                winner_reached=ok,
                steps_to_target=best.get("steps_to_target") if ok and best else None,
                epochs_to_target=best.get("epochs_to_target") if ok and best else None,
                best_top1=best.get("best_top1") if best else None,
                algoperf_steps=algoperf_steps(c.studies),
                values=best.get("tuned") if best else None,
                trial_steps=f"{reached[0]:,}-{reached[-1]:,}" if reached else None,  # spread over trials
                final_runs=len(c.finals),
                final_reached=sum(_reached(r) for r in c.finals),
                final_steps=olympic_mean([r["steps_to_target"] for r in c.finals if _reached(r)]),
            )
        )
    return out


def winners_only(summaries: list[Record]) -> list[Record]:
    """The summaries with each tuned cell's trials replaced by its winner (the main table's
    row of a tuned cell is its best trial, not a mix of every trial)."""
    keep = [s for s in summaries if s.get("trial") is None]  # final-seed runs included
    for c in studies(summaries):
        best, _ = winner(c.trials)
        if best is not None and not c.finals:
            keep.append(best)
    return keep


def markdown(rows: list[Record]) -> str:
    cols = [
        "method",
        "global_batch",
        "framework",
        "trials",
        "reached",
        "winner",
        "steps_to_target",
        "best_top1",
        "algoperf_steps",
        "trial_steps",
        "final_runs",
        "final_reached",
        "final_steps",
        "values",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            if v is None:
                cells.append("-")
            elif c == "values":
                cells.append(", ".join(f"{k}={x:.4g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items()))
            elif c == "algoperf_steps":
                cells.append("inf" if math.isinf(v) else f"{v:,.0f}")
            elif c == "final_steps":
                cells.append(f"{v:,.1f}")
            elif c == "best_top1":
                cells.append(f"{v:.4f}")
            elif c == "winner" and not r["winner_reached"]:
                cells.append(f"{v} (not reached)")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

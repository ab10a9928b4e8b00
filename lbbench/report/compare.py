"""`lbbench compare NEW BASELINE`: cell-by-cell regression check of two result sets.

A cell is (method label, global batch, framework); either side is a results directory or a
compact baseline JSON (`lbbench baseline`). A cell regresses when
  - the baseline reached the target in it and the new set never does;
  - epochs to target went up: with >= 3 successful seeds on both sides, MLPerf's RCP test
    (olympic means, one-sided Welch t-test at 0.05); otherwise the olympic mean rose by more
    than the relative tolerance and by at least one evaluation interval;
  - best top-1 fell by more than the absolute tolerance;
  - images/s fell by more than the relative tolerance (checked only when asked for: shared
    machines are noisy).
Cells missing on either side are listed, not judged.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lbbench.report import selection
from lbbench.report.stats import olympic_mean, one_sided_welch_p
from lbbench.report.tables import collect

FIELDS = (
    "status",
    "epochs_to_target",
    "best_top1",
    "images_per_s",
    "seed",
    "np",
    "time_to_train_s",
    "time_to_target_s",
    "accelerators",
    "source",
    "rcp_factor",
)
KEY_PARTS = ("method", "batch", "framework")  # a cell key is "method|batch|framework"


class NoMatch(Exception):
    """No cell of one side matches a cell of the other: a comparison that would pass by accident."""


@dataclass(frozen=True)
class Tolerance:
    epochs: float = 0.25  # relative rise of epochs to target
    top1: float = 0.02  # absolute fall of best top-1
    images_per_s: float | None = None  # relative fall; None: not checked
    eval_every: int = 1  # epochs between evaluations (the resolution of epochs to target)
    time: float | None = None  # relative rise of MLPerf's time to train; None: shown only with show_time
    show_time: bool = False  # add MLPerf minutes and accelerator-hours to each cell's details


Record = dict[str, Any]  # one run's fields (FIELDS) in a cell


def _olympic(values: list[float]) -> float:
    m = olympic_mean(values)
    assert m is not None  # only called with values
    return m


def cells_of(source: Path) -> dict[str, Any]:
    """{"cells": {key: [per-run records]}, ...} from a results directory or a baseline file. A
    tuned cell's records are its winner (or the winner's final-seed runs), never its trials: the
    gate holds the best steps to target at each batch, as the report shows it."""
    source = Path(source)
    if source.is_file():
        doc: dict[str, Any] = json.loads(source.read_text())
        return doc
    cells: dict[str, list[Record]] = defaultdict(list)
    for s in selection.winners_only(collect(source)):
        key = f"{s.get('label', s.get('method'))}|{s['global_batch']}|{s['framework']}"
        cells[key].append({k: s.get(k) for k in FIELDS})  # older baselines lack the later fields
    return {"source": str(source), "cells": dict(sorted(cells.items()))}


def baseline(results: Path, machine: str | None = None) -> dict[str, Any]:
    out = cells_of(results)
    out.update(machine=machine or f"{platform.machine()}-{__import__('os').cpu_count()}cpu", format=1)
    return out


def rekey(cells: dict[str, list[Record]], match: tuple[str, ...]) -> dict[str, list[Record]]:
    """Cells keyed by the ``match`` parts of "method|batch|framework" (runs of cells that then
    share a key are pooled: --match method,batch puts every framework's runs in one cell)."""
    unknown = set(match) - set(KEY_PARTS)
    if unknown or not match:
        raise ValueError(f"--match takes {', '.join(KEY_PARTS)}; got {', '.join(match) or 'nothing'}")
    out: dict[str, list[Record]] = defaultdict(list)
    for key, runs in cells.items():
        parts = dict(zip(KEY_PARTS, key.split("|")))
        out["|".join(parts[m] for m in KEY_PARTS if m in match)] += runs
    return dict(out)


def compare(
    new: dict[str, Any], base: dict[str, Any], tol: Tolerance, match: tuple[str, ...] = KEY_PARTS
) -> tuple[list[Record], bool]:
    """Rows (cell, verdict, details) and whether any cell regressed. Raises NoMatch when the two
    sides share no cell (nothing would be compared: never a silent pass)."""
    new_cells, base_cells = rekey(new["cells"], match), rekey(base["cells"], match)
    if not set(new_cells) & set(base_cells):
        raise NoMatch(
            f"no cell ({'|'.join(m for m in KEY_PARTS if m in match)}) is on both sides; "
            f"new: {', '.join(sorted(new_cells)) or 'none'}; baseline: {', '.join(sorted(base_cells)) or 'none'}"
        )
    new, base = {"cells": new_cells}, {"cells": base_cells}
    rows: list[Record] = []
    failed = False
    for key in sorted(set(new["cells"]) | set(base["cells"])):
        n, b = new["cells"].get(key), base["cells"].get(key)
        if n is None or b is None:
            rows.append(dict(cell=key, verdict="missing in " + ("new" if n is None else "baseline"), details=""))
            continue
        problems = _judge(n, b, tol)
        failed |= bool(problems)
        details = "; ".join(problems) or _brief(n, b)
        if tol.show_time or tol.time is not None:
            details += "; " + _time_brief(n, b)
        rows.append(dict(cell=key, verdict="REGRESSED" if problems else "ok", details=details))
    return rows, failed


def _minutes(rs: list[Record]) -> float | None:
    """MLPerf's score of the runs (non-converged ones infinite; a published RCP factor applied)."""
    from lbbench.mlperf.scoring import olympic

    done = [r for r in rs if r.get("status") in ("success", "not_reached", "diverged")]
    mins = [r["time_to_train_s"] / 60 if r["status"] == "success" and r.get("time_to_train_s") else None for r in done]
    mean = olympic(mins) if done else None
    return None if mean is None else mean * (done[0].get("rcp_factor") or 1.0)


def _accel_hours(rs: list[Record]) -> float | None:
    hours = [
        r["time_to_target_s"] * r["accelerators"] / 3600
        for r in rs
        if r.get("status") == "success" and r.get("time_to_target_s") and r.get("accelerators")
    ]
    return olympic_mean(hours)


def _time_brief(n: list[Record], b: list[Record]) -> str:
    def f(v: float | None, unit: str) -> str:
        return "-" if v is None else f"{v:.3g} {unit}"

    mn, mb = _minutes(n), _minutes(b)
    hn, hb = _accel_hours(n), _accel_hours(b)
    ratio = f" (x{mn / mb:.2f})" if mn and mb else ""
    return f"time to train {f(mb, 'min')} -> {f(mn, 'min')}{ratio}, accelerator-hours {f(hb, 'h')} -> {f(hn, 'h')}"


def _judge(n: list[Record], b: list[Record], tol: Tolerance) -> list[str]:
    out = []
    if tol.time is not None:
        mn, mb = _minutes(n), _minutes(b)
        if mb is not None and (mn is None or mn > mb * (1 + tol.time)):
            shown = "no score" if mn is None else f"{mn:.3f} min"
            out.append(f"MLPerf time to train {mb:.3f} min -> {shown} (> {tol.time:.0%})")
    ne = [r["epochs_to_target"] for r in n if r["status"] == "success"]
    be = [r["epochs_to_target"] for r in b if r["status"] == "success"]
    if be and not ne:
        out.append(f"no longer reaches the target (baseline: {len(be)}/{len(b)} runs did)")
    elif be and ne:
        mn, mb = _olympic(ne), _olympic(be)
        if len(ne) >= 3 and len(be) >= 3:
            p = one_sided_welch_p(ne, be)
            if p < 0.05 and mn > mb:
                out.append(f"epochs to target {mb:.1f} -> {mn:.1f} (one-sided t-test p={p:.3f})")
        elif mn > mb * (1 + tol.epochs) and mn - mb >= tol.eval_every:
            out.append(f"epochs to target {mb:.1f} -> {mn:.1f} (> {tol.epochs:.0%})")
    nt = [r["best_top1"] for r in n if r.get("best_top1") is not None]
    bt = [r["best_top1"] for r in b if r.get("best_top1") is not None]
    if nt and bt and statistics.fmean(nt) < statistics.fmean(bt) - tol.top1:
        out.append(f"best top-1 {statistics.fmean(bt):.4f} -> {statistics.fmean(nt):.4f} (> {tol.top1} down)")
    if tol.images_per_s is not None:
        ni = [r["images_per_s"] for r in n if r.get("images_per_s")]
        bi = [r["images_per_s"] for r in b if r.get("images_per_s")]
        if ni and bi and statistics.fmean(ni) < statistics.fmean(bi) * (1 - tol.images_per_s):
            out.append(
                f"images/s {statistics.fmean(bi):,.0f} -> {statistics.fmean(ni):,.0f} (> {tol.images_per_s:.0%} down)"
            )
    return out


def _brief(n: list[Record], b: list[Record]) -> str:
    def s(rs: list[Record]) -> str:
        e = [r["epochs_to_target"] for r in rs if r["status"] == "success"]
        t = [r["best_top1"] for r in rs if r.get("best_top1") is not None]
        return (f"{olympic_mean(e):.1f} ep" if e else "not reached") + (
            f", top-1 {statistics.fmean(t):.4f}" if t else ""
        )

    return f"{s(b)} -> {s(n)}"

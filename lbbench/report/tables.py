"""Time-to-accuracy tables: one row per (method, global batch, framework), built only from the
summary.json files under a results directory.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from lbbench.report.stats import olympic_mean, spread
from lbbench.spec import RunSpec
from lbbench.store.files import iter_run_dirs
from lbbench.store.summary import summary_or_damage

COLUMNS = [
    "method",
    "global_batch",
    "framework",
    "np",
    "runs",
    "seeds",
    "status",
    "epochs_to_target",
    "epochs_spread",
    "steps_to_target",
    "samples_to_target",
    "time_to_target_s",
    "mlperf_minutes",
    "best_top1",
    "images_per_s",
    "accelerators",
    "images_per_s_per_accelerator",
    "accelerator_hours_to_target",
    "scaling_efficiency",
    "source",  # lbbench, or the published MLPerf submission a row was imported from
]
OWN = "lbbench"  # the source of runs lbbench trained; imported ones name their MLPerf round and system


def collect(results: Path) -> list[dict[str, Any]]:
    """One record per run directory: its summary; or, for a run without a usable one, the cell
    from its run.yaml with status "unfinished" or "damaged" (and the reason)."""
    out = []
    for rdir in iter_run_dirs(results):
        s, damage = summary_or_damage(rdir)
        if s is not None:
            out.append(s.model_dump() | _source(rdir))
        else:
            out.append(
                {
                    "run_id": rdir.name,
                    "status": "damaged" if damage else "unfinished",
                    "reason": damage,
                    **_from_spec(rdir),
                }
            )
    return out


def _source(rdir: Path) -> dict[str, Any]:
    """Where a run comes from: lbbench, or a published MLPerf submission (with its RCP factor)."""
    from lbbench.mlperf.importer import is_published, provenance

    if not is_published(rdir):
        return {"source": OWN, "rcp_factor": 1.0}
    p = provenance(rdir)
    return {
        "source": f"published: MLPerf v{p['round']} {p['submitter']} {p['system_name']}",
        "rcp_factor": p.get("rcp_factor", 1.0),
    }


def _from_spec(rdir: Path) -> dict[str, Any]:
    try:
        spec = RunSpec.load(rdir / "run.yaml")
    except Exception as e:
        return {
            "label": f"? ({rdir.name})",
            "method": "?",
            "global_batch": 0,
            "framework": "?",
            "np": 0,
            "seed": 0,
            "status": "damaged",
            "reason": f"{rdir / 'run.yaml'}: unreadable ({type(e).__name__}: {e})",
        }
    return {k: getattr(spec, k) for k in ("label", "method", "global_batch", "framework", "np", "seed")}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _mlperf_minutes(runs: list[dict[str, Any]]) -> float | None:
    """MLPerf's score of the cell's runs (lbbench/mlperf/scoring.py): runs that did not reach the
    target count as infinite; a published system's RCP factor applies."""
    from lbbench.mlperf.scoring import olympic

    finished = [r for r in runs if r["status"] in ("success", "not_reached", "diverged")]
    if not finished:
        return None
    minutes = [
        r["time_to_train_s"] / 60 if r["status"] == "success" and r.get("time_to_train_s") else None for r in finished
    ]
    mean = olympic(minutes)
    return None if mean is None else mean * finished[0].get("rcp_factor", 1.0)


def _accelerators(runs: list[dict[str, Any]]) -> str | None:
    """ "8 x NVIDIA H100-SXM5-80GB" (several values joined where the cell's runs differ)."""
    seen = sorted({(r["accelerators"], r.get("accelerator") or "?") for r in runs if r.get("accelerators")})
    return ", ".join(f"{n} x {name}" for n, name in seen) or None


def _scaling_efficiency(runs: list[dict[str, Any]]) -> float | None:
    """images/s per worker at the largest np relative to the smallest, where a cell has several."""
    by_np: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        if r.get("images_per_s"):
            by_np[r["np"]].append(r["images_per_s"])
    if len(by_np) < 2:
        return None
    lo, hi = min(by_np), max(by_np)
    return (statistics.fmean(by_np[hi]) / hi) / (statistics.fmean(by_np[lo]) / lo)


def rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        groups[(s.get("label", s.get("method")), s["global_batch"], s["framework"], s.get("source", OWN))].append(s)
    out = []
    for (label, batch, fw, source), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])
    ):
        ok = [r for r in runs if r["status"] == "success"]
        counts: dict[str, int] = defaultdict(int)
        for r in runs:
            counts[r["status"]] += 1
        status = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
        out.append(
            dict(
                method=label,
                source=source,
                global_batch=batch,
                framework=fw,
                np="/".join(str(n) for n in sorted({r["np"] for r in runs})),
                runs=len(runs),
                seeds=len({r["seed"] for r in runs}),
                status=status,
                # MLPerf: olympic mean over seeds (drop the fastest and slowest), plus the spread
                epochs_to_target=olympic_mean([r["epochs_to_target"] for r in ok]),
                epochs_spread=spread([r["epochs_to_target"] for r in ok]),
                steps_to_target=olympic_mean([r["steps_to_target"] for r in ok]),
                samples_to_target=olympic_mean([r["samples_to_target"] for r in ok]),
                time_to_target_s=olympic_mean(
                    [r["time_to_target_s"] for r in ok if r.get("time_to_target_valid", True)]
                ),
                mlperf_minutes=_mlperf_minutes(runs),
                best_top1=_mean([r["best_top1"] for r in runs if r.get("best_top1") is not None]),
                images_per_s=_mean([r["images_per_s"] for r in runs if r.get("images_per_s")]),
                accelerators=_accelerators(runs),
                images_per_s_per_accelerator=_mean(
                    [
                        r["images_per_s"] / r["accelerators"]
                        for r in runs
                        if r.get("images_per_s") and r.get("accelerators")
                    ]
                ),
                accelerator_hours_to_target=olympic_mean(
                    [
                        r["time_to_target_s"] * r["accelerators"] / 3600
                        for r in ok
                        if r.get("time_to_target_s") and r.get("accelerators") and r.get("time_to_target_valid", True)
                    ]
                ),
                scaling_efficiency=_scaling_efficiency(runs),
            )
        )
    return out


TIME_PARTS = ("data", "compute", "allreduce", "optimizer", "other", "overhead", "eval")
TIME_COLUMNS = [
    "method",
    "global_batch",
    "framework",
    *(f"{k}_share" for k in TIME_PARTS),
    "compute_images_per_s",
    "images_per_s",
    "train_gflop_per_image",
    "achieved_tflops",
    "mfu",
]


def time_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the time goes, per cell: each part's share of the summed parts (the worker's
    decomposition, lbbench/backends/torch/train.py), forward+backward-only vs end-to-end
    images/s (the gap is input stalls, allreduce and the optimizer), and the roofline figures.
    Runs from before the decomposition existed have no parts and are left out."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        if s.get("time_parts_s"):
            groups[(s.get("label", s.get("method")), s["global_batch"], s["framework"])].append(s)
    out = []
    for (label, batch, fw), runs in sorted(groups.items()):
        totals = {k: sum(r["time_parts_s"].get(k, 0.0) for r in runs) for k in TIME_PARTS}
        whole = sum(totals.values()) or 1.0
        out.append(
            dict(
                method=label,
                global_batch=batch,
                framework=fw,
                **{f"{k}_share": totals[k] / whole for k in TIME_PARTS},
                **{
                    k: _mean([r[k] for r in runs if r.get(k) is not None])
                    for k in ("compute_images_per_s", "images_per_s", "train_gflop_per_image", "achieved_tflops", "mfu")
                },
            )
        )
    return out


def time_markdown(table: list[dict[str, Any]]) -> str:
    def f(key: str, v: Any) -> str:
        if v is None:
            return "-"
        if key.endswith("_share") or key == "mfu":
            return f"{v:.1%}"
        if key in ("compute_images_per_s", "images_per_s"):
            return f"{v:,.0f}"
        return f"{v:.3g}"

    lines = ["| " + " | ".join(TIME_COLUMNS) + " |", "|" + "---|" * len(TIME_COLUMNS)]
    lines += [
        "| "
        + " | ".join(
            f(c, r[c]) if c not in ("method", "global_batch", "framework") else str(r[c]) for c in TIME_COLUMNS
        )
        + " |"
        for r in table
    ]
    return "\n".join(lines) + "\n"


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key == "best_top1":
        return f"{v:.4f}"
    if key in ("epochs_spread", "scaling_efficiency"):
        return f"{v:.2f}"
    if key in ("epochs_to_target",):
        return f"{v:.1f}" if v != int(v) else str(int(v))
    if key in ("steps_to_target", "samples_to_target", "images_per_s", "images_per_s_per_accelerator"):
        return f"{v:,.0f}"
    if key == "time_to_target_s":
        return f"{v:.1f}"
    if key == "mlperf_minutes":
        return f"{v:.3f}"
    if key == "accelerator_hours_to_target":
        return f"{v:.3g}"
    return str(v)


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(c, r[c]) for c in COLUMNS) + " |" for r in table]
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()

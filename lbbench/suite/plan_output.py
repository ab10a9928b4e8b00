"""`lbbench plan --format json|csv`: every run as its fully resolved RunSpec, for scripts, CI and
cluster tooling. JSON holds each RunSpec whole (the run id, the method's resolved
hyperparameters, the LR schedule with every field, the batch split, the trial and its sampled
values); CSV flattens it to dotted columns, one row per run."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from lbbench.spec import RunSpec


def as_json(runs: list[RunSpec]) -> str:
    return rows_json([r.model_dump(mode="json") for r in runs])


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1) + "\n"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flat(v, key + ".")
        elif isinstance(v, list | tuple):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def as_csv(runs: list[RunSpec]) -> str:
    return rows_csv([_flat(r.model_dump(mode="json")) for r in runs])


def rows_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def cost_rows(runs: list[RunSpec], images_per_s: float, accelerators: int | None = None) -> list[dict[str, Any]]:
    """Per cell (method, global batch, framework, np): runs (trials x seeds), steps and samples at
    the epoch budget (an upper bound: a run stops at its target), and the wall time and
    accelerator-hours at ``images_per_s`` per accelerator - on the run's np accelerators (one
    worker each), or on ``accelerators`` of them when given (the same global batch spread
    wider: the images are the same, the per-accelerator share is B / accelerators)."""
    cells: dict[tuple[str, int, str, int], list[RunSpec]] = {}
    for r in runs:
        cells.setdefault((r.label, r.global_batch, r.framework, r.np), []).append(r)
    out = []
    for (label, batch, fw, n), rs in cells.items():
        steps = sum(r.steps_per_epoch * r.max_epochs for r in rs)
        samples = steps * batch
        acc = accelerators or n
        wall_h = samples / (images_per_s * acc) / 3600
        out.append(
            dict(
                method=label,
                global_batch=batch,
                framework=fw,
                np=n,
                accelerators=acc,
                images_per_accelerator_step=batch / acc,
                runs=len(rs),
                steps=steps,
                samples=samples,
                wall_hours=wall_h,
                accelerator_hours=wall_h * acc,
            )
        )
    return out

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
    return json.dumps([r.model_dump(mode="json") for r in runs], indent=1) + "\n"


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
    rows = [_flat(r.model_dump(mode="json")) for r in runs]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()

"""MLPerf's reference convergence points (RCPs) for ResNet-50, read from the installed
mlperf_logging package (never copied): MLPerf's own LARS runs by global batch, with the
hyperparameters they used and their epochs to 75.9% top-1.

Used three times: as the LARS recipe (lbbench/suite/recipes.py), as the reference curve of the
report's figures, and beside a cell's own RCP in an exported package (export.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from lbbench.workloads import WORKLOADS

RULESET = "4.0.0"  # MLPerf retired ResNet after v4.0: the last ruleset with ResNet rules


@lru_cache(maxsize=1)
def rcp_records() -> dict[str, Any]:
    """The installed rcps_resnet.json, as MLPerf's tools read it."""
    path = resources.files("mlperf_logging") / "rcp_checker" / f"training_{RULESET}" / "rcps_resnet.json"
    records: dict[str, Any] = json.loads(path.read_text())
    return records


def largest_rcp_batch() -> int:
    return max(int(r["BS"]) for r in rcp_records().values())


def resolve_decay_epochs(
    decay_steps: float, warmup_epochs: float, batch: int, trained_epochs: float
) -> tuple[float, str]:
    """The train epochs behind a logged ``opt_learning_rate_decay_steps``, which submitters log in
    three conventions: the MLPerf TF reference's post-warmup steps + 1 (T - Tw + 1), total
    steps (T), or - NVIDIA's and tinygrad's v4.0 logs - the epochs themselves. Steps are
    N / B per epoch (float: the readings then come out whole, e.g. 37.00 and 42.00 epochs). The
    reading is the shortest that covers the epochs the runs trained (their slowest converging
    evaluation, less one epoch of evaluation granularity): a schedule is planned to end where
    training does, and no reading may end before it."""
    n = WORKLOADS["imagenet"].train_samples
    assert n is not None
    s = n / batch
    readings = [
        ((decay_steps - 1) / s + warmup_epochs, "post-warmup steps + 1"),
        (decay_steps / s, "total steps"),
        (float(decay_steps), "epochs"),
    ]
    covering = [r for r in readings if r[0] >= trained_epochs - 1]
    return min(covering) if covering else max(readings)


@lru_cache(maxsize=1)
def mlperf_rcps() -> list[dict[str, Any]]:
    """The RCPs sorted by batch, in lbbench's terms (train_epochs resolved per record)."""
    out = []
    for rcp in rcp_records().values():
        hp, B = rcp["Hyperparams"], rcp["BS"]
        warm = hp["opt_learning_rate_warmup_epochs"]
        epochs = sorted(rcp["Epochs to converge"])
        train_epochs, convention = resolve_decay_epochs(hp["opt_learning_rate_decay_steps"], warm, B, max(epochs))
        out.append(
            dict(
                batch=B,
                peak_lr=hp["opt_base_learning_rate"],
                warmup_epochs=warm,
                momentum=hp["opt_momentum"],
                weight_decay=hp["opt_weight_decay"],
                bn_span=hp["model_bn_span"],
                train_epochs=train_epochs,
                decay_convention=convention,
                epochs_to_target=sum(epochs[1:-1]) / (len(epochs) - 2),
            )
        )  # olympic mean
    return sorted(out, key=lambda r: r["batch"])

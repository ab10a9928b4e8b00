"""Per-batch recipes: hyperparameters that depend on the global batch (framework-free).

mlperf_lars  MLPerf's reference convergence points (RCPs), read from the installed
             mlperf_logging package (never copied): peak LR, warm-up epochs, momentum and the
             poly-2 decay length are interpolated linearly in log2(B) between the two nearest
             points; weight decay (which closed division requires to be 1e-4 x 2^k) is taken
             from the nearest point. Outside 1,632-67,840 the end points are used (clamped) and
             the recipe says so.
spngd        K-FAC / SP-NGD (Osawa et al. 2020; chainerkfac configs as in METHODS.md section 7):
             lr0, momentum and damping interpolated in log2(B) between the 4K, 32K and 128K
             configs, epochs from the published table; poly decay after 1 warm-up epoch.
"""
from __future__ import annotations

import bisect
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

IMAGENET_TRAIN = 1_281_167

# (global batch, lr0, momentum, damping): chainerkfac ResNet-50 configs (METHODS.md section 7)
SPNGD_POINTS = [(4096, 8.18e-3, 0.997, 2.5e-4), (32768, 3e-2, 0.97, 2e-4), (131072, 7e-2, 0.93, 1e-4)]
SPNGD_EPOCHS = [(4096, 35), (8192, 35), (16384, 35), (32768, 45), (65536, 60), (131072, 80)]


@lru_cache(maxsize=1)
def mlperf_rcps() -> list[dict[str, Any]]:
    """The ResNet RCPs of ruleset 4.0.0, sorted by batch, in lbbench's terms."""
    path = resources.files("mlperf_logging") / "rcp_checker" / "training_4.0.0" / "rcps_resnet.json"
    out = []
    for rcp in json.loads(path.read_text()).values():
        hp, B = rcp["Hyperparams"], rcp["BS"]
        S = math.ceil(IMAGENET_TRAIN / B)
        warm = hp["opt_learning_rate_warmup_epochs"]
        epochs = sorted(rcp["Epochs to converge"])
        out.append(dict(batch=B, peak_lr=hp["opt_base_learning_rate"], warmup_epochs=warm,
                        momentum=hp["opt_momentum"], weight_decay=hp["opt_weight_decay"],
                        bn_span=hp["model_bn_span"],
                        train_epochs=(hp["opt_learning_rate_decay_steps"] - 1) / S + warm,
                        epochs_to_target=sum(epochs[1:-1]) / (len(epochs) - 2)))   # olympic mean
    return sorted(out, key=lambda r: r["batch"])


def _interp(points: list[tuple[int, float]], B: int) -> tuple[float, str]:
    xs = [p[0] for p in points]
    if B <= xs[0] or B >= xs[-1]:
        end = points[0] if B <= xs[0] else points[-1]
        return end[1], ("" if B == end[0] else f"clamped to B={end[0]}")
    i = bisect.bisect_left(xs, B)
    if xs[i] == B:
        return points[i][1], ""
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    f = (math.log2(B) - math.log2(x0)) / (math.log2(x1) - math.log2(x0))
    return y0 + f * (y1 - y0), f"interpolated between B={x0} and B={x1}"


def mlperf_lars(B: int) -> dict[str, Any]:
    rcps = mlperf_rcps()
    out, note = {}, ""
    for key in ("peak_lr", "warmup_epochs", "momentum", "train_epochs"):
        out[key], note = _interp([(r["batch"], r[key]) for r in rcps], B)
    nearest = min(rcps, key=lambda r: abs(math.log2(r["batch"]) - math.log2(B)))
    out["weight_decay"] = nearest["weight_decay"]
    out["source"] = f"MLPerf RCP (mlperf_logging training_4.0.0) {note or 'at this batch'}"
    return out


def spngd(B: int) -> dict[str, Any]:
    out, notes = {}, []
    for j, key in enumerate(("peak_lr", "momentum", "damping"), start=1):
        out[key], note = _interp([(p[0], p[j]) for p in SPNGD_POINTS], B)
        notes.append(note)
    out["train_epochs"] = float(_interp(SPNGD_EPOCHS, B)[0])
    out["warmup_epochs"] = 1.0
    out["source"] = f"SP-NGD configs {notes[0] or 'at this batch'}"
    return out


RECIPES = {"mlperf_lars": mlperf_lars, "spngd": spngd}

"""Per-batch recipes: hyperparameters that depend on the global batch (framework-free).

mlperf_lars  MLPerf's reference convergence points (RCPs), read from the installed
             mlperf_logging package (never copied): peak LR, warm-up epochs, momentum and the
             poly-2 decay length are interpolated linearly in log2(B) between the two nearest
             points; weight decay (which closed division requires to be 1e-4 x 2^k) is taken
             from the nearest point. Outside 1,632-67,840 the end points are used (clamped) and
             the recipe says so.
spngd        K-FAC / SP-NGD (Osawa et al. 2020; chainerkfac configs as in docs/methods.md section 7):
             lr0, momentum and damping interpolated in log2(B) between the 4K, 32K and 128K
             configs, epochs from the published table; poly decay after 1 warm-up epoch.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from lbbench.mlperf.rcps import mlperf_rcps

# (global batch, lr0, momentum, damping): chainerkfac ResNet-50 configs (docs/methods.md section 7)
SPNGD_POINTS = [(4096, 8.18e-3, 0.997, 2.5e-4), (32768, 3e-2, 0.97, 2e-4), (131072, 7e-2, 0.93, 1e-4)]
SPNGD_EPOCHS = [(4096, 35), (8192, 35), (16384, 35), (32768, 45), (65536, 60), (131072, 80)]


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

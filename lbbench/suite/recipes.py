"""Per-batch recipes: every hyperparameter, schedule field, run length and BN span a published
recipe implies at a global batch (framework-free). A recipe row of a suite takes all of them from
here - it inherits nothing from the suite's lr block - and the run logs where each came from
(`lbbench_recipe`) and what of the source lbbench does not reproduce (`lbbench_not_reproduced`).

mlperf_lars  MLPerf's reference convergence points (RCPs), read from the installed mlperf_logging
             (lbbench/mlperf/rcps.py), MLPerf's closed-division LARS: poly-2 to 1e-4 after a
             linear warmup from 0. One rule for every field: at an RCP batch the RCP itself;
             between two RCPs, peak LR, warmup epochs, momentum and train epochs interpolated
             linearly in log2(B), weight decay geometrically and then snapped to the nearest
             1e-4 x 2^k (closed division allows no other), the BN span of the nearer RCP; outside
             1,632-67,840 the end RCP (clamped, and said so). Each RCP's decay length is resolved
             in its own convention (rcps.py). The run length is the schedule's.
spngd        K-FAC / SP-NGD as chainerkfac's ImageNet configs (Osawa et al.; tyohei/chainerkfac,
             examples/imagenet/configs, 32 images per GPU): at 4K/8K/16K/32K/64K/128K every field
             of the config - lr0, momentum, damping, constant LR until `epoch_lr_decay_start`,
             then lr0 (1 - (e - start) / (E - start))^p with E = max(epoch, polynomial_epoch),
             training `epoch` epochs, factors and inverses every step, no weight decay but weight
             rescaling, BN damping 64 x r, BN statistics over 32 images; between configs the
             numbers interpolated in log2(B) [lbbench]; outside, the end config (clamped).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbbench.mlperf.rcps import mlperf_rcps


@dataclass(frozen=True)
class Recipe:
    hparams: dict[str, Any]  # the method's hyperparameters the recipe fixes
    lr: dict[str, Any]  # every LrSpec field: schedule, peak_lr, warmup, end, power, length
    max_epochs: int  # how long the source trained
    bn_span: int | None  # samples per BN statistic in the source (None: the suite's)
    source: str  # where each number came from
    not_reproduced: tuple[str, ...] = field(default=())


def _interp(points: list[tuple[int, float]], B: int, geometric: bool = False) -> tuple[float, str]:
    """Linear in log2(B) between the neighbouring points (geometric: in log of the value too);
    clamped to the end points outside them."""
    xs = [p[0] for p in points]
    if B <= xs[0] or B >= xs[-1]:
        end = points[0] if B <= xs[0] else points[-1]
        return end[1], ("" if B == end[0] else f"clamped to B={end[0]}")
    i = bisect.bisect_left(xs, B)
    if xs[i] == B:
        return points[i][1], ""
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    f = (math.log2(B) - math.log2(x0)) / (math.log2(x1) - math.log2(x0))
    if geometric:
        return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0))), f"interpolated between B={x0} and B={x1}"
    return y0 + f * (y1 - y0), f"interpolated between B={x0} and B={x1}"


def _nearest(points: list[tuple[int, Any]], B: int) -> tuple[int, Any]:
    return min(points, key=lambda p: abs(math.log2(p[0]) - math.log2(B)))


def snap_weight_decay(wd: float) -> float:
    """The nearest 1e-4 x 2^k (in log): the only weight decays MLPerf's closed LARS allows."""
    return 1e-4 * 2.0 ** round(math.log2(wd / 1e-4))


def mlperf_lars(B: int) -> Recipe:
    rcps = mlperf_rcps()
    out: dict[str, float] = {}
    note = ""
    for key in ("peak_lr", "warmup_epochs", "momentum", "train_epochs"):
        out[key], note = _interp([(r["batch"], r[key]) for r in rcps], B)
    wd, _ = _interp([(r["batch"], r["weight_decay"]) for r in rcps], B, geometric=True)
    span_batch, span = _nearest([(r["batch"], r["bn_span"]) for r in rcps], B)
    train_epochs = out["train_epochs"]
    conventions = sorted({r["decay_convention"] for r in rcps if r["batch"] in _neighbours(rcps, B)})
    source = (
        f"MLPerf RCP (mlperf_logging training_4.0.0) {note or 'at this batch'}; peak LR, warmup, momentum "
        f"and train epochs {'linear in log2(B)' if note else 'as recorded'}; weight decay "
        f"{'geometric in log2(B), ' if note else ''}snapped to 1e-4 x 2^k; BN span {span} from B={span_batch}; "
        f"decay length read as {', '.join(conventions)}"
    )
    return Recipe(
        hparams=dict(momentum=out["momentum"], weight_decay=snap_weight_decay(wd), eps=0.0, nesterov=False),
        lr=dict(
            schedule="poly",
            peak_lr=out["peak_lr"],
            warmup_epochs=out["warmup_epochs"],
            warmup_start_lr=0.0,
            end_lr=1e-4,
            poly_power=2.0,
            train_epochs=train_epochs,
            decay_start_epochs=0.0,
        ),
        max_epochs=math.ceil(train_epochs - 1e-9),
        bn_span=int(span),
        source=source,
    )


def _neighbours(rcps: list[dict[str, Any]], B: int) -> set[int]:
    xs = [r["batch"] for r in rcps]
    if B <= xs[0]:
        return {xs[0]}
    if B >= xs[-1]:
        return {xs[-1]}
    i = bisect.bisect_left(xs, B)
    return {xs[i]} if xs[i] == B else {xs[i - 1], xs[i]}


# chainerkfac's ImageNet configs: batch -> (lr, momentum, damping, decay start, power, polynomial_epoch,
# epoch, mixup alpha). https://github.com/tyohei/chainerkfac examples/imagenet/configs/bs*.resnet50.128gpu.json
SPNGD_CONFIGS = {
    4096: (8.18e-3, 0.997, 2.5e-4, 1.0, 11.0, 53.0, 36, 0.4),
    8192: (1.25e-2, 0.993, 2.5e-4, 1.0, 8.0, 53.5, 36, 0.4),
    16384: (2.5e-2, 0.985, 2.5e-4, 1.0, 8.0, 53.5, 36, 0.4),
    32768: (3.0e-2, 0.97, 2.0e-4, 1.5, 3.5, 49.5, 46, 0.6),
    65536: (4.0e-2, 0.95, 1.5e-4, 2.0, 2.9, 64.5, 61, 0.6),
    131072: (7.0e-2, 0.93, 1.0e-4, 1.0, 3.0, 95.0, 81, 1.0),
}
SPNGD_IMAGES_PER_GPU = 32


def spngd(B: int) -> Recipe:
    batches = sorted(SPNGD_CONFIGS)
    fields = ("lr", "momentum", "damping", "decay_start", "power", "polynomial_epoch", "epoch", "mixup")
    cfg: dict[str, float] = {}
    note = ""
    for j, name in enumerate(fields):
        cfg[name], note = _interp([(b, float(SPNGD_CONFIGS[b][j])) for b in batches], B)
    epochs = math.ceil(cfg["epoch"] - 1e-9)
    return Recipe(
        hparams=dict(
            momentum=cfg["momentum"],
            damping=cfg["damping"],
            weight_decay=0.0,
            stat_decay=1.0,
            factor_every=1,
            inverse_every=1,
            momentum_adjust=True,
            bn_damping_scale=64.0,
            weight_rescale=True,
            bn_fisher="unit_wise",
        ),
        lr=dict(
            schedule="polynomial",
            peak_lr=cfg["lr"],
            warmup_epochs=0.0,
            warmup_start_lr=0.0,
            end_lr=0.0,
            poly_power=cfg["power"],
            train_epochs=max(cfg["epoch"], cfg["polynomial_epoch"]),
            decay_start_epochs=cfg["decay_start"],
        ),
        max_epochs=epochs,
        bn_span=SPNGD_IMAGES_PER_GPU,
        source=f"chainerkfac ImageNet config {note or 'at this batch'} (every field of bs*.resnet50.128gpu.json)",
        not_reproduced=(
            f"mixup (alpha {cfg['mixup']:.2g}, running mixup)",
            "random erasing (rate 0.5, area 0.02-0.25, aspect >= 0.3)",
            "ResNet-50-D (3x3 stem convs, average-pool shortcuts, BN gamma ~ N(1, 0.05), BN eps 2e-5): "
            "lbbench trains ResNet-50 v1.5",
            "the BN Fisher as one (2C x 2C) block per layer: lbbench's is unit-wise (2x2 per channel)",
        ),
    )


RECIPES: dict[str, Callable[[int], Recipe]] = {"mlperf_lars": mlperf_lars, "spngd": spngd}

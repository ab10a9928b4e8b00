"""When a run has diverged (issue: failure isolation). Framework-free rules the workers apply."""

from __future__ import annotations

import math


def loss_diverged(loss: float) -> str | None:
    return None if math.isfinite(loss) else f"training loss is {loss}"


def accuracy_collapsed(best: float | None, top1: float, classes: int) -> str | None:
    """Top-1 back near chance after clearly above it: training blew up without producing a NaN
    (e.g. weights saturated after an LR spike). Thresholds: best at least 5x chance, now at most
    1.5x chance, so a slow start or a noisy evaluation never counts."""
    chance = 1.0 / classes
    if best is not None and best >= 5 * chance and top1 <= 1.5 * chance:
        return f"accuracy collapse: top-1 {top1:.4f} after a best of {best:.4f} (chance {chance:.4f})"
    return None

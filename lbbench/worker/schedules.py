"""Learning-rate schedules as pure functions of the step (docs/methods.md section 0).

Shared by both backends and by the suite front end (MLLOG keys, recipes), so a schedule is
computed once, the same way, everywhere. ``lr_at(t)`` is the LR of the update of step t
(t = 1, 2, ...). The formulas are evaluated at the number of updates already done, s = t - 1,
as MLPerf's reference does (``PolynomialDecayWithWarmup`` in the MLPerf ResNet TF2 code reads
the optimizer's iteration count, 0 at the first update, so the first update uses LR(0) - 0
after a warmup from 0), and the warmup length is kept as a float (warmup_epochs x S).

Kinds:
  poly        MLPerf: linear warmup from ``warmup_start_lr``, then end + (peak - end)(1 - x/D)^power,
              x = s - Tw, D = T - Tw + 1 (T = ceil(train_epochs x S) updates)
  polynomial  chainerkfac's SP-NGD schedule: peak until ``decay_start_epochs``, then
              peak (1 - (e - start) / (train_epochs - start))^power, 0 after; e = s / S epochs
  step        x decay_factor at each milestone epoch (Goyal: 30, 60, 80 of 90), optional warmup
  cosine      warmup, then a cosine from peak to end_lr over the rest of T
  constant    the peak
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lbbench.spec import LrSpec


@dataclass(frozen=True)
class Schedule:
    kind: str  # poly | polynomial | step | cosine | constant
    peak_lr: float
    steps_per_epoch: int
    train_epochs: float
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0  # Goyal warms up from 0.1; MLPerf poly from 0
    end_lr: float = 1e-4  # poly and cosine floor
    poly_power: float = 2.0
    milestones: tuple[float, ...] = ()  # step schedule, in epochs
    decay_factor: float = 0.1
    decay_start_epochs: float = 0.0  # polynomial: the constant phase before the decay

    @property
    def warmup_steps(self) -> float:
        return self.warmup_epochs * self.steps_per_epoch

    @property
    def train_steps(self) -> int:
        return math.ceil(self.train_epochs * self.steps_per_epoch)

    @property
    def decay_steps(self) -> float:
        """MLPerf's lars_opt_learning_rate_decay_steps: T - Tw + 1 (logged as an integer)."""
        return self.train_steps - self.warmup_steps + 1

    def lr_at(self, t: int) -> float:
        s = t - 1  # updates done before this one
        tw = self.warmup_steps
        if self.kind not in ("constant", "polynomial") and tw > 0 and s <= tw:
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * s / tw
        if self.kind == "poly":
            d = self.decay_steps
            frac = min(s - tw, d) / d
            return float(self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - frac) ** self.poly_power)
        if self.kind == "polynomial":
            e, start, end = s / self.steps_per_epoch, self.decay_start_epochs, self.train_epochs
            if e < start:
                return self.peak_lr
            return self.peak_lr * (1.0 - (e - start) / (end - start)) ** self.poly_power if e < end else 0.0
        if self.kind == "step":
            drops = sum(1 for m in self.milestones if s / self.steps_per_epoch >= m)
            return float(self.peak_lr * self.decay_factor**drops)
        if self.kind == "cosine":
            span = max(self.train_steps - tw, 1.0)
            frac = min(max(s - tw, 0.0), span) / span
            return self.end_lr + 0.5 * (self.peak_lr - self.end_lr) * (1 + math.cos(math.pi * frac))
        if self.kind == "constant":
            return self.peak_lr
        raise ValueError(f"unknown schedule {self.kind!r}")


def goyal_milestones(train_epochs: float) -> tuple[float, ...]:
    """Goyal et al.: x0.1 at epochs 30, 60, 80 of 90; scaled to shorter budgets."""
    return tuple(train_epochs * m / 90 for m in (30, 60, 80))


def scaled_lr(rule: str, base_lr: float, base_batch: int, batch: int) -> float:
    if rule == "linear":
        return base_lr * batch / base_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(batch / base_batch)
    if rule == "constant":
        return base_lr
    raise ValueError(f"unknown LR scaling rule {rule!r}")


def make_schedule(lr: LrSpec, steps_per_epoch: int) -> Schedule:
    return Schedule(
        decay_start_epochs=lr.decay_start_epochs,
        kind=lr.schedule,
        peak_lr=lr.peak_lr,
        steps_per_epoch=steps_per_epoch,
        train_epochs=lr.train_epochs,
        warmup_epochs=lr.warmup_epochs,
        warmup_start_lr=lr.warmup_start_lr,
        end_lr=lr.end_lr,
        poly_power=lr.poly_power,
        milestones=lr.milestones,
        decay_factor=lr.decay_factor,
    )


def schedule_facts(lr: LrSpec, steps_per_epoch: int) -> dict[str, Any]:
    """What the MLLOG keys of a method need to know about its schedule."""
    s = make_schedule(lr, steps_per_epoch)
    return dict(
        warmup_start_lr=lr.warmup_start_lr,
        schedule=lr.schedule,
        base_lr=lr.peak_lr,
        end_lr=lr.end_lr,
        poly_power=lr.poly_power,
        warmup_epochs=lr.warmup_epochs,
        decay_steps=int(s.decay_steps),
        train_steps=s.train_steps,
    )

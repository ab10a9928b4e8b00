"""Learning-rate schedules as pure functions of the step (docs/methods.md section 0).

Shared by both backends and by the suite front end (MLLOG keys, recipes), so a schedule is
computed once, the same way, everywhere. ``lr_at(t)`` is the LR used for the update of step t,
with t counted from 1 as in the MLPerf formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lbbench.spec import LrSpec


@dataclass(frozen=True)
class Schedule:
    kind: str  # poly | step | cosine | constant
    peak_lr: float
    steps_per_epoch: int
    train_epochs: float
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0  # Goyal warms up from 0.1; MLPerf poly from 0
    end_lr: float = 1e-4  # poly and cosine floor
    poly_power: float = 2.0
    milestones: tuple[float, ...] = ()  # step schedule, in epochs
    decay_factor: float = 0.1

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    @property
    def train_steps(self) -> int:
        return math.ceil(self.train_epochs * self.steps_per_epoch)

    @property
    def decay_steps(self) -> int:
        """MLPerf's lars_opt_learning_rate_decay_steps: T - Tw + 1."""
        return self.train_steps - self.warmup_steps + 1

    def lr_at(self, t: int) -> float:
        tw = self.warmup_steps
        if self.kind != "constant" and tw > 0 and t <= tw:
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * t / tw
        if self.kind == "poly":
            d = self.decay_steps
            frac = min(t - tw, d) / d
            return float(self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - frac) ** self.poly_power)
        if self.kind == "step":
            epoch = (t - 1) / self.steps_per_epoch  # epochs completed before this step
            drops = sum(1 for m in self.milestones if epoch >= m)
            return self.peak_lr * self.decay_factor**drops
        if self.kind == "cosine":
            span = max(self.train_steps - tw, 1)
            frac = min(max(t - tw, 0), span) / span
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
        schedule=lr.schedule,
        base_lr=lr.peak_lr,
        end_lr=lr.end_lr,
        poly_power=lr.poly_power,
        warmup_epochs=lr.warmup_epochs,
        decay_steps=s.decay_steps,
        train_steps=s.train_steps,
    )

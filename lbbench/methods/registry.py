"""The registry records (framework-free). The math lives in docs/methods.md and in each
method's module; the backends' implementations are looked up through the record:

- ``step`` names the training-step strategy (a key of ``STEP_KINDS``): every backend has one
  table from step kind to strategy class (``lbbench/backends/<fw>/steps.py: STEPS``);
- ``update_rule(hparams)`` names the update rule the strategy hands the averaged gradient to,
  and that rule's hyperparameters: every backend has one table from rule name to
  implementation (``lbbench/backends/<fw>/optim/: RULES``). By default a method is its own rule;
  wrappers (GradientMix) and methods with their own step (EXTRAP-SGD, K-FAC) name another;
- ``loss_weight`` (optional) weights micro-batch k's loss before backward (GradientMix).

Everything else that depends on the kind of method (fp16 loss scaling, a benchmark's
period of periodic work, which methods a wrapper may wrap) is derived from these fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Hparams = dict[str, Any]
MllogKeys = Callable[[Hparams, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class StepKind:
    """A training-step strategy, as far as code outside the backends needs to know it."""

    name: str
    # The strategy updates the weights itself (not one optimizer.step() on the averaged
    # gradients): fp16 loss scaling (unscale, skip on overflow) is wired only into the plain path.
    custom_update: bool
    # The hyperparameter holding the period of its periodic work (benchmarks amortise over it).
    period_hparam: str | None = None
    # Can run with run.perf.compile (torch.compile / XLA)? Not CBLR (double backward through a
    # compiled graph is unsupported) nor K-FAC (its capture hooks toggle per step: graph breaks).
    compiles: bool = True


STEP_KINDS: dict[str, StepKind] = {
    k.name: k
    for k in (
        StepKind("standard", custom_update=False),
        StepKind("extrap", custom_update=True),
        StepKind("curvature", custom_update=True, period_hparam="curvature_every", compiles=False),
        StepKind("kfac", custom_update=True, period_hparam="factor_every", compiles=False),
    )
}


@dataclass(frozen=True)
class HParam:
    default: Any
    kind: type  # bool, int, float, str, dict
    doc: str
    choices: tuple[Any, ...] | None = None


def _open_division(hp: Hparams, sched: dict[str, Any]) -> str | None:
    return "open-division method"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    doc: str
    hparams: dict[str, HParam]
    # MLPerf opt_name; closed division exists only for "sgd" and "lars".
    opt_name: str
    # (resolved hparams, schedule facts) -> {MLLOG key: value}; facts has base_lr, end_lr,
    # warmup_epochs, decay_steps, poly_power, schedule.
    mllog_keys: MllogKeys
    # (resolved hparams, schedule facts) -> None if the run may log closed division, else why not.
    closed_division: Callable[[Hparams, dict[str, Any]], str | None] = _open_division
    step: str = "standard"
    # resolved hparams -> (update rule name, its hparams); None: the method is its own rule.
    update: Callable[[Hparams], tuple[str, Hparams]] | None = None
    # (hparams, seed, step, epoch, k, K) -> micro-batch k's loss weight; None: 1.
    loss_weight: Callable[[Hparams, int, int, int, int, int], float] | None = None
    needs_local_grads: bool = False  # per-virtual-worker gradients before the allreduce
    passes_per_step: int = 1  # forward/backward passes per micro-batch
    lbbench_choices: tuple[str, ...] = field(default=())  # [lbbench] decisions, logged with the run
    # Cross-field validation after defaults are filled (e.g. a wrapper's base method).
    finalize: Callable[[Hparams], Hparams] | None = None

    def __post_init__(self) -> None:
        if self.step not in STEP_KINDS:
            raise ValueError(f"method {self.name!r}: unknown step kind {self.step!r}; known: {', '.join(STEP_KINDS)}")

    @property
    def step_kind(self) -> StepKind:
        return STEP_KINDS[self.step]

    def update_rule(self, hp: Hparams) -> tuple[str, Hparams]:
        """The update rule (by name, the same in every backend) and its hyperparameters."""
        return self.update(hp) if self.update else (self.name, hp)

    @property
    def is_plain_optimizer(self) -> bool:
        """The standard step, its own rule, equal loss weights: what a wrapper may wrap."""
        return self.step == "standard" and self.update is None and self.loss_weight is None


class UnknownMethod(KeyError):
    pass


class BadHParam(ValueError):
    """Carries the offending hyperparameter name so suite errors can point at its line."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    assert info.name not in REGISTRY, info.name
    REGISTRY[info.name] = info
    return info


def get_method(name: str) -> MethodInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethod(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def resolve_hparams(name: str, given: Hparams) -> Hparams:
    """Fill defaults; unknown or mistyped hyperparameters are errors (init2winit's locked hparams)."""
    info = get_method(name)
    out: Hparams = {}
    for key in given:
        if key not in info.hparams:
            raise BadHParam(
                key, f"unknown hyperparameter {key!r} for method {name!r}; known: {', '.join(sorted(info.hparams))}"
            )
    for key, hp in info.hparams.items():
        value = given.get(key, hp.default)
        if hp.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if hp.kind is dict and isinstance(value, dict):
            value = dict(value)
        if not isinstance(value, hp.kind) or (hp.kind is int and isinstance(value, bool)):
            raise BadHParam(key, f"{name}.{key} must be {hp.kind.__name__}, got {value!r}")
        if hp.choices is not None and value not in hp.choices:
            raise BadHParam(key, f"{name}.{key} must be one of {list(hp.choices)}, got {value!r}")
        out[key] = value
    return info.finalize(out) if info.finalize else out


def is_power_of_two_multiple(value: float, unit: float) -> bool:
    if value <= 0:
        return False
    k = math.log2(value / unit)
    return abs(k - round(k)) < 1e-9


# Hyperparameters shared by the momentum family.
MOMENTUM = {
    "momentum": HParam(0.9, float, "momentum mu"),
    "nesterov": HParam(False, bool, "Nesterov momentum"),
    "weight_decay": HParam(1e-4, float, "L2 weight decay beta, applied in the update, not the loss"),
    "exclude_bn_bias": HParam(True, bool, "no weight decay (and no trust ratio) on BN and biases (MLPerf skip list)"),
}


SCHEDULE_KEYS = ("base_lr", "end_lr", "warmup_epochs", "decay_steps", "poly_power", "schedule")


def open_keys(prefix: str) -> MllogKeys:
    """Open-division MLLOG keys: every hyperparameter as <prefix>_<name>, plus the schedule."""

    def keys(hp: Hparams, sched: dict[str, Any]) -> dict[str, Any]:
        out = {f"{prefix}_{k}": v for k, v in hp.items()}
        out.update({f"opt_{k}": sched[k] for k in SCHEDULE_KEYS})
        return out

    return keys

"""The registry records. The math lives in METHODS.md and in each backend's module."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class HParam:
    default: Any
    kind: type                # bool, int, float, str
    doc: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class MethodInfo:
    name: str
    doc: str
    hparams: dict[str, HParam]
    # MLPerf opt_name; closed division exists only for "sgd" and "lars".
    opt_name: str
    # (resolved hparams, schedule facts) -> {MLLOG key: value}; facts has base_lr, end_lr,
    # warmup_epochs, decay_steps, poly_power, schedule.
    mllog_keys: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
    # (resolved hparams, schedule facts) -> None if the run may log closed division, else why not.
    closed_division: Callable[[dict[str, Any], dict[str, Any]], str | None] = lambda hp, sched: "open-division method"
    needs_local_grads: bool = False   # per-virtual-worker gradients before the allreduce
    passes_per_step: int = 1          # forward/backward passes per micro-batch
    lbbench_choices: tuple[str, ...] = field(default=())  # [lbbench] decisions, logged with the run
    # Cross-field validation after defaults are filled (e.g. a wrapper's base method).
    finalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None


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


def resolve_hparams(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults; unknown or mistyped hyperparameters are errors (init2winit's locked hparams)."""
    info = get_method(name)
    out: dict[str, Any] = {}
    for key in given:
        if key not in info.hparams:
            raise BadHParam(key, f"unknown hyperparameter {key!r} for method {name!r}; "
                                 f"known: {', '.join(sorted(info.hparams))}")
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


def open_keys(prefix: str) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """Open-division MLLOG keys: every hyperparameter as <prefix>_<name>, plus the schedule."""
    def keys(hp: dict[str, Any], sched: dict[str, Any]) -> dict[str, Any]:
        out = {f"{prefix}_{k}": v for k, v in hp.items()}
        out.update({f"opt_{k}": sched[k] for k in SCHEDULE_KEYS})
        return out
    return keys

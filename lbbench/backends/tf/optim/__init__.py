"""TensorFlow update rules: the PyTorch backend's formulas (lbbench/backends/torch/optim/,
docs/methods.md) with the same hyperparameter names, one module per method family, in one table
``RULES`` of ``Rule``s. A module adds its rules with ``@rule(name, slots=..., scalars=...)``;
every module of this package is imported below.

The gradient a rule sees is already the global-batch average (accumulated micro-batches, then
one Horovod allreduce). ``lr`` is set by the training loop from the shared schedule before
every step.

One step over all variables runs as one ``tf.function`` (graph mode, no XLA): the Python loop
over the variables runs once, when the function is traced, instead of every step. For that:
- state lives in per-variable ``tf.Variable`` slots (``slots``: their initial values, created
  on the first step, so a rule's first step sees zeros as the eager rules did), checkpointed as
  NumPy arrays;
- every number a rule uses reaches it as a scalar tensor of the variables' dtype, computed in
  Python each step by the rule's ``scalars(hp, lr, t)`` exactly as the eager expressions
  computed it (``1 - b1`` and Adam's bias corrections in float64, then rounded once), so a
  hyperparameter that changes every step (K-FAC's adjusted momentum) needs no new trace and
  the graph computes what the eager rule did; only structural hyperparameters (bools, choices,
  whether a value is zero) shape the graph, and a change of them traces it anew;
- ``Optimizer(..., compiled=False)`` runs the same rule functions eagerly; the tests hold the
  two to the same bits.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lbbench.backends.tf.model import is_excluded

Apply = Callable[["Optimizer", tf.Variable, tf.Tensor, bool, dict[str, Any], dict[str, tf.Tensor]], None]
Slots = Callable[[dict[str, Any], tf.Variable, bool], dict[str, Any]]
Scalars = Callable[[dict[str, Any], float, int], dict[str, float]]


@dataclass(frozen=True)
class Rule:
    apply: Apply  # (optimizer, variable, gradient, excluded?, slots, scalars): assigns both
    slots: Slots  # name -> initial value (a tensor or a Python float) of a variable's state
    scalars: Scalars  # (hp, lr, t) -> the step's numbers, t = 1, 2, ... the update's index


RULES: dict[str, Rule] = {}


def _no_slots(hp: dict[str, Any], v: tf.Variable, excl: bool) -> dict[str, Any]:
    return {}


def _lr_only(hp: dict[str, Any], lr: float, t: int) -> dict[str, float]:
    return {"lr": lr}


def rule(name: str, slots: Slots = _no_slots, scalars: Scalars = _lr_only) -> Callable[[Apply], Apply]:
    def add(fn: Apply) -> Apply:
        assert name not in RULES, f"update rule {name!r} defined twice"
        RULES[name] = Rule(fn, slots, scalars)
        return fn

    return add


def norm(x: tf.Tensor) -> tf.Tensor:
    return tf.norm(tf.reshape(x, [-1]))


def zeros(name: str) -> Slots:
    return lambda hp, v, excl: {name: tf.zeros_like(v)}


def with_trust(slots: Slots, excluded_too: bool = False) -> Slots:
    """A rule's slots plus the trust ratio the diagnostics read: 1 until the rule sets it, and
    on excluded tensors only where the PyTorch rule reports one there (LARS, LAMB: 1)."""
    return lambda hp, v, excl: {**slots(hp, v, excl), **({} if excl and not excluded_too else {"trust_ratio": 1.0})}


def momentum_inside(st: dict, v: tf.Variable, scaled, mu, nesterov: bool = False) -> None:
    """v_buf <- mu v_buf + scaled; w <- w - v_buf (Nesterov: w <- w - (mu v_buf + scaled))."""
    buf = mu * st["momentum_buffer"] + scaled
    st["momentum_buffer"].assign(buf)
    v.assign_sub(mu * buf + scaled if nesterov else buf)


class Optimizer:
    """One method's rule applied to every trainable variable."""

    def __init__(self, method: str, hp: dict, variables: list, lr: float, compiled: bool = True):
        if method not in RULES:
            raise NotImplementedError(
                f"update rule {method!r} has no TensorFlow implementation "
                f"(lbbench/backends/tf/optim/); known: {', '.join(sorted(RULES))}"
            )
        self.method, self.spec, self.hp, self.lr = method, RULES[method], hp, lr
        self.vars = list(variables)
        keep = hp.get("exclude_bn_bias", True)
        self.excluded = [keep and is_excluded(v) for v in self.vars]
        self.state: list[dict[str, Any]] = [{} for _ in self.vars]
        self.t = 0  # updates done
        self.compiled = compiled
        self._fns: dict[Any, Any] = {}
        self._slotted: tuple[int, ...] = ()  # the variables whose slots exist
        self._layout: tuple[tuple[str, ...], ...] | None = None  # their state keys; None: to recompute

    def step(self, grads: list) -> None:
        self.t += 1
        dtype = self.vars[0].dtype
        live = [i for i, g in enumerate(grads) if g is not None]
        if tuple(live) != self._slotted:  # the first step, or a variable's first gradient
            for i in live:
                if not any(k != "hdiag" for k in self.state[i]):
                    v = self.vars[i]
                    for k, x in self.spec.slots(self.hp, v, self.excluded[i]).items():
                        self.state[i][k] = tf.Variable(tf.cast(x, v.dtype), trainable=False)
            self._slotted, self._layout = tuple(live), None
        sc = {k: tf.constant(x, dtype) for k, x in self.spec.scalars(self.hp, self.lr, self.t).items()}
        gs = [tf.convert_to_tensor(grads[i]) for i in live]
        if not self.compiled:
            self._apply(live, gs, sc)
            return
        if self._layout is None:  # each variable's state, recomputed only when it changes
            self._layout = tuple(tuple(sorted(st)) for st in self.state)
        # the graph's shape: which variables update, their state, the structural hyperparameters
        key = (
            self._slotted,
            self._layout,
            tuple(sorted((k, x == 0 if isinstance(x, float) else repr(x)) for k, x in self.hp.items())),
            tuple(sorted(sc)),
        )
        if key not in self._fns:  # a concrete function: no signature matching on every call
            fn = tf.function(lambda gs, sc: self._apply(live, gs, sc), autograph=False)
            self._fns[key] = fn.get_concrete_function(
                [tf.TensorSpec.from_tensor(g) for g in gs], {k: tf.TensorSpec([], dtype) for k in sc}
            )
        self._fns[key](gs, sc)

    def _apply(self, live: list[int], gs: list, sc: dict[str, tf.Tensor]) -> None:
        for i, g in zip(live, gs):
            self.spec.apply(self, self.vars[i], g, self.excluded[i], self.state[i], sc)

    def set_curvature(self, diag: list) -> None:
        """CBLR: a refresh's estimate, averaged into the running one (its weight: curvature_ema)."""
        w = self.hp["curvature_ema"]
        for st, h in zip(self.state, diag):
            if "hdiag" not in st:
                st["hdiag"] = tf.Variable(h, trainable=False)
                self._layout = None
            else:
                st["hdiag"].assign((1 - w) * st["hdiag"] + w * h)

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "t": self.t,
            "state": [{k: np.asarray(x.numpy()) for k, x in st.items()} for st in self.state],
        }

    def load_state_dict(self, d: dict) -> None:
        self.lr = d["lr"]
        # checkpoints before the compiled step kept the update count per variable, as "step"
        counts = [st.get("step") for st in d["state"] if isinstance(st.get("step"), (int, np.integer))]
        self.t = int(d.get("t", max(counts, default=0)))
        self.state = [{k: tf.Variable(x, trainable=False) for k, x in st.items() if k != "step"} for st in d["state"]]
        self._fns, self._slotted, self._layout = {}, (), None


for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")

"""TensorFlow update rules: the PyTorch backend's formulas (lbbench/backends/torch/optim/,
docs/methods.md) with the same hyperparameter names, one module per method family, in one table:
``RULES`` maps a rule name (the registry's ``update_rule``) to a function
``rule(optimizer, variable, gradient, excluded?, per-variable state)``. A module adds its rules
with ``@rule(name)``; every module of this package is imported below.

The gradient a rule sees is already the global-batch average (accumulated micro-batches,
then one Horovod allreduce). ``lr`` is set by the training loop from the shared schedule
before every step. State is plain tensors per variable, so checkpoints are NumPy arrays.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from lbbench.backends.tf.model import is_excluded

Rule = Callable[["Optimizer", tf.Variable, tf.Tensor, bool, dict[str, Any]], None]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def add(fn: Rule) -> Rule:
        assert name not in RULES, f"update rule {name!r} defined twice"
        RULES[name] = fn
        return fn

    return add


def norm(x: tf.Tensor) -> tf.Tensor:
    return tf.norm(tf.reshape(x, [-1]))


def momentum_inside(st: dict, v: tf.Variable, scaled, mu: float, nesterov: bool = False) -> None:
    """v_buf <- mu v_buf + scaled; w <- w - v_buf (Nesterov: w <- w - (mu v_buf + scaled))."""
    buf = st.get("momentum_buffer", tf.zeros_like(v))
    buf = mu * buf + scaled
    st["momentum_buffer"] = buf
    v.assign_sub(mu * buf + scaled if nesterov else buf)


class Optimizer:
    """One method's rule applied to every trainable variable."""

    def __init__(self, method: str, hp: dict, variables: list, lr: float):
        if method not in RULES:
            raise NotImplementedError(
                f"update rule {method!r} has no TensorFlow implementation "
                f"(lbbench/backends/tf/optim/); known: {', '.join(sorted(RULES))}"
            )
        self.method, self.rule, self.hp, self.lr = method, RULES[method], hp, lr
        self.vars = list(variables)
        keep = hp.get("exclude_bn_bias", True)
        self.excluded = [keep and is_excluded(v) for v in self.vars]
        self.state: list[dict] = [{} for _ in self.vars]

    def step(self, grads: list) -> None:
        for v, g, excl, st in zip(self.vars, grads, self.excluded, self.state):
            if g is not None:
                self.rule(self, v, tf.convert_to_tensor(g), excl, st)

    def set_curvature(self, diag: list) -> None:
        """CBLR: a refresh's estimate, averaged into the running one (its weight: curvature_ema)."""
        w = self.hp["curvature_ema"]
        for st, h in zip(self.state, diag):
            st["hdiag"] = h if "hdiag" not in st else (1 - w) * st["hdiag"] + w * h

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "state": [{k: (x.numpy() if hasattr(x, "numpy") else x) for k, x in st.items()} for st in self.state],
        }

    def load_state_dict(self, d: dict) -> None:
        self.lr = d["lr"]
        self.state = [
            {k: tf.constant(x) if isinstance(x, (np.ndarray, np.generic)) else x for k, x in st.items()}
            for st in d["state"]
        ]


for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")

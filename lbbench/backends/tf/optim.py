"""TensorFlow implementations of the registry's optimizer methods: the same formulas as the
PyTorch backend's (lbbench/backends/torch/optim/, METHODS.md), the same hyperparameter names,
one update rule per method over (variable, gradient, excluded?, per-variable state).

The gradient a rule sees is already the global-batch average (accumulated micro-batches,
then one Horovod allreduce). ``lr`` is set by the training loop from the shared schedule
before every step. State is plain tensors per variable, so checkpoints are NumPy arrays.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from lbbench.backends.tf.model import is_excluded


def _norm(x):
    return tf.norm(tf.reshape(x, [-1]))


def momentum_inside(st: dict, v: tf.Variable, scaled, mu: float, nesterov: bool = False) -> None:
    """v_buf <- mu v_buf + scaled; w <- w - v_buf (Nesterov: w <- w - (mu v_buf + scaled))."""
    buf = st.get("momentum_buffer", tf.zeros_like(v))
    buf = mu * buf + scaled
    st["momentum_buffer"] = buf
    v.assign_sub(mu * buf + scaled if nesterov else buf)


def median(x):
    """NumPy's median: the mean of the two middle values for an even count."""
    flat = tf.sort(tf.reshape(x, [-1]))
    n = int(flat.shape[0])
    return flat[n // 2] if n % 2 else (flat[n // 2 - 1] + flat[n // 2]) / 2


def sgd(o, v, g, excl, st):
    hp, lr, mu = o.hp, o.lr, o.hp["momentum"]
    wd = 0.0 if excl else hp["weight_decay"]
    u = g + wd * v if wd else g
    buf = st.get("momentum_buffer", tf.zeros_like(v))
    if hp["lr_convention"] == "inside":
        buf = mu * buf + lr * u
        v.assign_sub(mu * buf + lr * u if hp["nesterov"] else buf)
    else:
        buf = mu * buf + u
        v.assign_sub(lr * (u + mu * buf) if hp["nesterov"] else lr * buf)
    st["momentum_buffer"] = buf


def lars(o, v, g, excl, st):
    hp, lr, wd = o.hp, o.lr, o.hp["weight_decay"]
    if excl:
        scaled, trust = g * lr, tf.constant(1.0)
    else:
        wn, gn = _norm(v), _norm(g)
        trust = tf.where((wn > 0) & (gn > 0), hp["eta"] * wn / (gn + wd * wn + hp["eps"]), 1.0)
        scaled = (g + wd * v) * (trust * lr)
    st["trust_ratio"] = trust
    momentum_inside(st, v, scaled, hp["momentum"], hp["nesterov"])


def lamb(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    b1, b2 = hp["beta1"], hp["beta2"]
    t = st["step"] = st.get("step", 0) + 1
    m = st["m"] = b1 * st.get("m", tf.zeros_like(v)) + (1 - b1) * g
    s = st["v"] = b2 * st.get("v", tf.zeros_like(v)) + (1 - b2) * g * g
    if hp["bias_correction"]:
        m, s = m / (1 - b1 ** t), s / (1 - b2 ** t)
    u = m / (tf.sqrt(s) + hp["eps"])
    if excl:
        st["trust_ratio"] = tf.constant(1.0)
        v.assign_sub(lr * u)
        return
    u = u + hp["weight_decay"] * v
    wn, un = _norm(v), _norm(u)
    if hp["clamp"] > 0:
        wn = tf.minimum(wn, hp["clamp"])
    ratio = tf.where((wn > 0) & (un > 0), wn / tf.where(un > 0, un, 1.0), 1.0)
    st["trust_ratio"] = ratio
    v.assign_sub(u * (ratio * lr))


def _adam(o, v, g, excl, st, decoupled: bool):
    """torch.optim.Adam / AdamW: L2 added to the gradient, or decoupled decay w *= 1 - lr wd."""
    hp, lr = o.hp, o.lr
    wd = 0.0 if excl else hp["weight_decay"]
    if decoupled and wd:
        v.assign(v * (1 - lr * wd))
    elif wd:
        g = g + wd * v
    b1, b2 = hp["beta1"], hp["beta2"]
    t = st["step"] = st.get("step", 0) + 1
    m = st["exp_avg"] = b1 * st.get("exp_avg", tf.zeros_like(v)) + (1 - b1) * g
    s = st["exp_avg_sq"] = b2 * st.get("exp_avg_sq", tf.zeros_like(v)) + (1 - b2) * g * g
    denom = tf.sqrt(s) / (1 - b2 ** t) ** 0.5 + hp["eps"]
    v.assign_sub((lr / (1 - b1 ** t)) * m / denom)


def adam(o, v, g, excl, st):
    _adam(o, v, g, excl, st, decoupled=False)


def adamw(o, v, g, excl, st):
    _adam(o, v, g, excl, st, decoupled=True)


def adagrad(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    wd = 0.0 if excl else hp["weight_decay"]
    if wd:
        g = g + wd * v
    s = st["sum"] = st.get("sum", tf.fill(v.shape, hp["initial_accumulator"])) + g * g
    v.assign_sub(lr * g / (tf.sqrt(s) + hp["eps"]))


def rmsprop(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    wd = 0.0 if excl else hp["weight_decay"]
    if wd:
        g = g + wd * v
    a = hp["alpha"]
    sq = st["square_avg"] = a * st.get("square_avg", tf.zeros_like(v)) + (1 - a) * g * g
    step = g / (tf.sqrt(sq) + hp["eps"])
    if hp["momentum"] > 0:
        step = st["momentum_buffer"] = hp["momentum"] * st.get("momentum_buffer", tf.zeros_like(v)) + step
    v.assign_sub(lr * step)


def mclr(o, v, g, excl, st):
    hp, lr, wd = o.hp, o.lr, o.hp["weight_decay"]
    if excl:
        scaled = g * lr
    else:
        mw, mg = median(tf.abs(v)), median(tf.abs(g))
        ratio = tf.where((mw > 0) & (mg > 0), mw / (mg + wd * mw), 1.0)
        st["trust_ratio"] = ratio
        scaled = (g + wd * v) * (ratio * lr)
    momentum_inside(st, v, scaled, hp["momentum"])


def percentdelta(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    wd = 0.0 if excl else hp["weight_decay"]
    shifted = v + tf.where(v >= 0, 1e-6, -1e-6)
    eta = lr / (tf.reduce_mean(tf.abs(g / shifted)) + 1e-5)
    st["trust_ratio"] = eta / lr if lr else eta
    momentum_inside(st, v, (g + wd * v) * eta, hp["momentum"])


def cblr(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    if excl or "hdiag" not in st:
        scaled = g * lr
    else:
        radius = (1 + g * g) ** 1.5 / tf.maximum(tf.abs(st["hdiag"]), hp["curvature_floor"])
        scaled = (g + hp["weight_decay"] * v) * radius * lr
    momentum_inside(st, v, scaled, hp["momentum"])


RULES = {"sgd": sgd, "lars": lars, "lamb": lamb, "adam": adam, "adamw": adamw, "adagrad": adagrad,
         "rmsprop": rmsprop, "mclr": mclr, "percentdelta": percentdelta, "cblr": cblr}


class Optimizer:
    """One method's rule applied to every trainable variable."""

    def __init__(self, method: str, hp: dict, variables: list, lr: float):
        if method not in RULES:
            raise NotImplementedError(f"method {method!r} has no TensorFlow optimizer")
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
        for st, h in zip(self.state, diag):
            st["hdiag"] = h

    def state_dict(self) -> dict:
        return {"lr": self.lr, "state": [{k: (x.numpy() if hasattr(x, "numpy") else x) for k, x in st.items()}
                                         for st in self.state]}

    def load_state_dict(self, d: dict) -> None:
        self.lr = d["lr"]
        self.state = [{k: tf.constant(x) if isinstance(x, (np.ndarray, np.generic)) else x for k, x in st.items()}
                      for st in d["state"]]

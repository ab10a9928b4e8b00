"""Adam, AdamW, Adagrad, RMSprop with torch.optim's formulas (docs/methods.md section 8), so
that both backends run the same baseline; weight decay off on the excluded tensors."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import rule


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
    denom = tf.sqrt(s) / (1 - b2**t) ** 0.5 + hp["eps"]
    v.assign_sub((lr / (1 - b1**t)) * m / denom)


@rule("adam")
def adam(o, v, g, excl, st):
    _adam(o, v, g, excl, st, decoupled=False)


@rule("adamw")
def adamw(o, v, g, excl, st):
    _adam(o, v, g, excl, st, decoupled=True)


@rule("adagrad")
def adagrad(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    wd = 0.0 if excl else hp["weight_decay"]
    if wd:
        g = g + wd * v
    s = st["sum"] = st.get("sum", tf.fill(v.shape, tf.constant(hp["initial_accumulator"], v.dtype))) + g * g
    v.assign_sub(lr * g / (tf.sqrt(s) + hp["eps"]))


@rule("rmsprop")
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

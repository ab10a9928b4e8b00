"""Adam, AdamW, Adagrad, RMSprop with torch.optim's formulas (docs/methods.md section 8), so
that both backends run the same baseline; weight decay off on the excluded tensors."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import rule


def _adam_slots(hp, v, excl):
    return {"exp_avg": tf.zeros_like(v), "exp_avg_sq": tf.zeros_like(v)}


def _adam_scalars(hp, lr, t):
    b1, b2, wd = hp["beta1"], hp["beta2"], hp["weight_decay"]
    return dict(
        wd=wd,
        decay=1 - lr * wd,  # AdamW's w *= 1 - lr wd
        b1=b1,
        b2=b2,
        one_minus_b1=1 - b1,
        one_minus_b2=1 - b2,
        correction2_sqrt=(1 - b2**t) ** 0.5,  # float64, then rounded once, as the eager rule did
        step_size=lr / (1 - b1**t),
        eps=hp["eps"],
    )


def _adam(o, v, g, excl, st, sc, decoupled: bool):
    """torch.optim.Adam / AdamW: L2 added to the gradient, or decoupled decay w *= 1 - lr wd."""
    wd = not excl and o.hp["weight_decay"]
    if decoupled and wd:
        v.assign(v * sc["decay"])
    elif wd:
        g = g + sc["wd"] * v
    m = sc["b1"] * st["exp_avg"] + sc["one_minus_b1"] * g
    s = sc["b2"] * st["exp_avg_sq"] + sc["one_minus_b2"] * g * g
    st["exp_avg"].assign(m)
    st["exp_avg_sq"].assign(s)
    denom = tf.sqrt(s) / sc["correction2_sqrt"] + sc["eps"]
    v.assign_sub(sc["step_size"] * m / denom)


@rule("adam", slots=_adam_slots, scalars=_adam_scalars)
def adam(o, v, g, excl, st, sc):
    _adam(o, v, g, excl, st, sc, decoupled=False)


@rule("adamw", slots=_adam_slots, scalars=_adam_scalars)
def adamw(o, v, g, excl, st, sc):
    _adam(o, v, g, excl, st, sc, decoupled=True)


def _adagrad_scalars(hp, lr, t):
    return dict(lr=lr, wd=hp["weight_decay"], eps=hp["eps"])


@rule(
    "adagrad",
    slots=lambda hp, v, excl: {"sum": tf.fill(v.shape, tf.constant(hp["initial_accumulator"], v.dtype))},
    scalars=_adagrad_scalars,
)
def adagrad(o, v, g, excl, st, sc):
    if not excl and o.hp["weight_decay"]:
        g = g + sc["wd"] * v
    s = st["sum"] + g * g
    st["sum"].assign(s)
    v.assign_sub(sc["lr"] * g / (tf.sqrt(s) + sc["eps"]))


def _rmsprop_slots(hp, v, excl):
    return {"square_avg": tf.zeros_like(v), **({"momentum_buffer": tf.zeros_like(v)} if hp["momentum"] > 0 else {})}


def _rmsprop_scalars(hp, lr, t):
    a = hp["alpha"]
    return dict(lr=lr, wd=hp["weight_decay"], alpha=a, one_minus_alpha=1 - a, eps=hp["eps"], mu=hp["momentum"])


@rule("rmsprop", slots=_rmsprop_slots, scalars=_rmsprop_scalars)
def rmsprop(o, v, g, excl, st, sc):
    if not excl and o.hp["weight_decay"]:
        g = g + sc["wd"] * v
    sq = sc["alpha"] * st["square_avg"] + sc["one_minus_alpha"] * g * g
    st["square_avg"].assign(sq)
    step = g / (tf.sqrt(sq) + sc["eps"])
    if o.hp["momentum"] > 0:
        step = sc["mu"] * st["momentum_buffer"] + step
        st["momentum_buffer"].assign(step)
    v.assign_sub(sc["lr"] * step)

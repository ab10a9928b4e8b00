"""MCLR and PercentDelta (docs/methods.md section 6; lbbench/methods/layerwise.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, rule


def median(x):
    """NumPy's median: the mean of the two middle values for an even count."""
    flat = tf.sort(tf.reshape(x, [-1]))
    n = int(flat.shape[0])
    return flat[n // 2] if n % 2 else (flat[n // 2 - 1] + flat[n // 2]) / 2


@rule("mclr")
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


@rule("percentdelta")
def percentdelta(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    if excl:  # plain momentum SGD: a zero-init BN shift must move at the LR
        momentum_inside(st, v, g * lr, hp["momentum"])
        return
    wd = hp["weight_decay"]
    shifted = v + tf.where(v >= 0, tf.constant(1e-6, v.dtype), tf.constant(-1e-6, v.dtype))
    eta = lr / (tf.reduce_mean(tf.abs(g / shifted)) + 1e-5)
    st["trust_ratio"] = eta / lr if lr else eta
    momentum_inside(st, v, (g + wd * v) * eta, hp["momentum"])

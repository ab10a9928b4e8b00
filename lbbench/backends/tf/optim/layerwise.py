"""MCLR and PercentDelta (docs/methods.md section 6; lbbench/methods/layerwise.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, rule, with_trust, zeros


def median(x):
    """NumPy's median: the mean of the two middle values for an even count."""
    flat = tf.sort(tf.reshape(x, [-1]))
    n = int(flat.shape[0])
    return flat[n // 2] if n % 2 else (flat[n // 2 - 1] + flat[n // 2]) / 2


def _scalars(hp, lr, t):
    return dict(lr=lr, mu=hp["momentum"], wd=hp["weight_decay"])


@rule("mclr", slots=with_trust(zeros("momentum_buffer")), scalars=_scalars)
def mclr(o, v, g, excl, st, sc):
    lr, wd = sc["lr"], sc["wd"]
    if excl:
        scaled = g * lr
    else:
        mw, mg = median(tf.abs(v)), median(tf.abs(g))
        ratio = tf.where((mw > 0) & (mg > 0), mw / (mg + wd * mw), 1.0)
        st["trust_ratio"].assign(ratio)
        scaled = (g + wd * v) * (ratio * lr)
    momentum_inside(st, v, scaled, sc["mu"])


@rule("percentdelta", slots=with_trust(zeros("momentum_buffer")), scalars=_scalars)
def percentdelta(o, v, g, excl, st, sc):
    lr = sc["lr"]
    if excl:  # plain momentum SGD: a zero-init BN shift must move at the LR
        momentum_inside(st, v, g * lr, sc["mu"])
        return
    shifted = v + tf.where(v >= 0, tf.constant(1e-6, v.dtype), tf.constant(-1e-6, v.dtype))
    eta = lr / (tf.reduce_mean(tf.abs(g / shifted)) + 1e-5)
    st["trust_ratio"].assign(tf.where(lr != 0, eta / tf.where(lr != 0, lr, 1.0), eta))
    momentum_inside(st, v, (g + sc["wd"] * v) * eta, sc["mu"])

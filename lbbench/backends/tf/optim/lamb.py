"""LAMB with bias correction (docs/methods.md section 3; lbbench/methods/lamb.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import norm, rule, with_trust


def _slots(hp, v, excl):
    return {"m": tf.zeros_like(v), "v": tf.zeros_like(v)}


def _scalars(hp, lr, t):
    b1, b2 = hp["beta1"], hp["beta2"]
    return dict(
        lr=lr,
        b1=b1,
        b2=b2,
        one_minus_b1=1 - b1,
        one_minus_b2=1 - b2,
        correction1=1 - b1**t,  # in float64, as the eager rule computed it
        correction2=1 - b2**t,
        eps=hp["eps"],
        wd=hp["weight_decay"],
        clamp=hp["clamp"],
    )


@rule("lamb", slots=with_trust(_slots, excluded_too=True), scalars=_scalars)
def lamb(o, v, g, excl, st, sc):
    lr = sc["lr"]
    m = sc["b1"] * st["m"] + sc["one_minus_b1"] * g
    s = sc["b2"] * st["v"] + sc["one_minus_b2"] * g * g
    st["m"].assign(m)
    st["v"].assign(s)
    if o.hp["bias_correction"]:
        m, s = m / sc["correction1"], s / sc["correction2"]
    u = m / (tf.sqrt(s) + sc["eps"])
    if excl:
        v.assign_sub(lr * u)
        return
    u = u + sc["wd"] * v
    wn, un = norm(v), norm(u)
    if o.hp["clamp"] > 0:
        wn = tf.minimum(wn, sc["clamp"])
    ratio = tf.where((wn > 0) & (un > 0), wn / tf.where(un > 0, un, 1.0), 1.0)
    st["trust_ratio"].assign(ratio)
    v.assign_sub(u * (ratio * lr))

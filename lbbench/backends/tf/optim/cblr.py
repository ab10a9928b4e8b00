"""CBLR's update given the Hessian-diagonal estimate (docs/methods.md section 6; lbbench/methods/cblr.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, rule, zeros


def _scalars(hp, lr, t):
    return dict(lr=lr, mu=hp["momentum"], wd=hp["weight_decay"], floor=hp["curvature_floor"])


@rule("cblr", slots=zeros("momentum_buffer"), scalars=_scalars)
def cblr(o, v, g, excl, st, sc):
    lr = sc["lr"]
    if excl or "hdiag" not in st:
        scaled = g * lr
    else:  # a zero estimate selects plain momentum SGD (see the PyTorch rule)
        h = tf.abs(st["hdiag"])
        mean = tf.reduce_mean(h)
        known = mean > 0
        denom = tf.where(known, tf.maximum(h, sc["floor"] * mean), tf.ones_like(h))
        radius = (1 + g * g) ** 1.5 / denom
        scaled = tf.where(known, (g + sc["wd"] * v) * radius, g) * lr
    momentum_inside(st, v, scaled, sc["mu"])

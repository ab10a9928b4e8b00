"""CBLR's update given the Hessian-diagonal estimate (docs/methods.md section 6; lbbench/methods/cblr.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, rule


@rule("cblr")
def cblr(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    if excl or "hdiag" not in st:
        scaled = g * lr
    else:  # a zero estimate selects plain momentum SGD (see the PyTorch rule)
        h = tf.abs(st["hdiag"])
        mean = tf.reduce_mean(h)
        known = mean > 0
        denom = tf.where(known, tf.maximum(h, hp["curvature_floor"] * mean), tf.ones_like(h))
        radius = (1 + g * g) ** 1.5 / denom
        scaled = tf.where(known, (g + hp["weight_decay"] * v) * radius, g) * lr
    momentum_inside(st, v, scaled, hp["momentum"])

"""CBLR's update given the Hessian-diagonal estimate (docs/methods.md section 6; lbbench/methods/cblr.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, rule


@rule("cblr")
def cblr(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    if excl or "hdiag" not in st:
        scaled = g * lr
    else:
        radius = (1 + g * g) ** 1.5 / tf.maximum(tf.abs(st["hdiag"]), hp["curvature_floor"])
        scaled = (g + hp["weight_decay"] * v) * radius * lr
    momentum_inside(st, v, scaled, hp["momentum"])

"""LARS, MLPerf form (docs/methods.md section 2; lbbench/methods/lars.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, norm, rule


@rule("lars")
def lars(o, v, g, excl, st):
    hp, lr, wd = o.hp, o.lr, o.hp["weight_decay"]
    if excl:
        scaled, trust = g * lr, tf.constant(1.0)
    else:
        wn, gn = norm(v), norm(g)
        trust = tf.where((wn > 0) & (gn > 0), hp["eta"] * wn / (gn + wd * wn + hp["eps"]), 1.0)
        scaled = (g + wd * v) * (trust * lr)
    st["trust_ratio"] = trust
    momentum_inside(st, v, scaled, hp["momentum"], hp["nesterov"])

"""LARS, MLPerf form (docs/methods.md section 2; lbbench/methods/lars.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import momentum_inside, norm, rule, with_trust, zeros


def _scalars(hp, lr, t):
    return dict(lr=lr, mu=hp["momentum"], wd=hp["weight_decay"], eta=hp["eta"], eps=hp["eps"])


@rule("lars", slots=with_trust(zeros("momentum_buffer"), excluded_too=True), scalars=_scalars)
def lars(o, v, g, excl, st, sc):
    lr, wd = sc["lr"], sc["wd"]
    if excl:
        scaled = g * lr
    else:
        wn, gn = norm(v), norm(g)
        trust = tf.where((wn > 0) & (gn > 0), sc["eta"] * wn / (gn + wd * wn + sc["eps"]), 1.0)
        scaled = (g + wd * v) * (trust * lr)
        st["trust_ratio"].assign(trust)
    momentum_inside(st, v, scaled, sc["mu"], o.hp["nesterov"])

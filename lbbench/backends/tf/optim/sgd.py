"""SGD with momentum, both LR conventions (docs/methods.md section 1; lbbench/methods/sgd.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import rule


@rule("sgd")
def sgd(o, v, g, excl, st):
    hp, lr, mu = o.hp, o.lr, o.hp["momentum"]
    wd = 0.0 if excl else hp["weight_decay"]
    u = g + wd * v if wd else g
    buf = st.get("momentum_buffer", tf.zeros_like(v))
    if hp["lr_convention"] == "inside":
        buf = mu * buf + lr * u
        v.assign_sub(mu * buf + lr * u if hp["nesterov"] else buf)
    else:
        buf = mu * buf + u
        v.assign_sub(lr * (u + mu * buf) if hp["nesterov"] else lr * buf)
    st["momentum_buffer"] = buf

"""SGD with momentum, both LR conventions (docs/methods.md section 1; lbbench/methods/sgd.py)."""

from __future__ import annotations

from lbbench.backends.tf.optim import rule, zeros


def _scalars(hp, lr, t):
    return dict(lr=lr, mu=hp["momentum"], wd=hp["weight_decay"])


@rule("sgd", slots=zeros("momentum_buffer"), scalars=_scalars)
def sgd(o, v, g, excl, st, sc):
    lr, mu = sc["lr"], sc["mu"]
    u = g + sc["wd"] * v if (not excl and o.hp["weight_decay"]) else g
    buf = st["momentum_buffer"]
    if o.hp["lr_convention"] == "inside":
        buf = mu * buf + lr * u
        v.assign_sub(mu * buf + lr * u if o.hp["nesterov"] else buf)
    else:
        buf = mu * buf + u
        v.assign_sub(lr * (u + mu * buf) if o.hp["nesterov"] else lr * buf)
    st["momentum_buffer"].assign(buf)

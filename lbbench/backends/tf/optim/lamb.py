"""LAMB with bias correction (docs/methods.md section 3; lbbench/methods/lamb.py)."""

from __future__ import annotations

import tensorflow as tf

from lbbench.backends.tf.optim import norm, rule


@rule("lamb")
def lamb(o, v, g, excl, st):
    hp, lr = o.hp, o.lr
    b1, b2 = hp["beta1"], hp["beta2"]
    t = st["step"] = st.get("step", 0) + 1
    m = st["m"] = b1 * st.get("m", tf.zeros_like(v)) + (1 - b1) * g
    s = st["v"] = b2 * st.get("v", tf.zeros_like(v)) + (1 - b2) * g * g
    if hp["bias_correction"]:
        m, s = m / (1 - b1**t), s / (1 - b2**t)
    u = m / (tf.sqrt(s) + hp["eps"])
    if excl:
        st["trust_ratio"] = tf.constant(1.0)
        v.assign_sub(lr * u)
        return
    u = u + hp["weight_decay"] * v
    wn, un = norm(v), norm(u)
    if hp["clamp"] > 0:
        wn = tf.minimum(wn, hp["clamp"])
    ratio = tf.where((wn > 0) & (un > 0), wn / tf.where(un > 0, un, 1.0), 1.0)
    st["trust_ratio"] = ratio
    v.assign_sub(u * (ratio * lr))

"""Per-tensor diagnostics and the gradient-noise scale (docs/methods.md section 9), every
``diag_every`` steps: the PyTorch Diagnostics' row (lbbench/backends/torch/diagnostics.py)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lbbench.worker.noise_scale import noise_scale_parts


def squared_norm(grads: list, scale: float = 1.0) -> float:
    """|scale x g|^2 over a micro-batch's gradients (a micro-batch gradient taken with its loss
    weighted 1/accum is scaled back by accum)."""
    return sum(float(tf.reduce_sum(tf.square(g * scale))) for g in grads)


def write_diag(loop: Any, step: int, loss: float, grads: list, before: list, micro_sq: list[float]) -> None:
    """Per-tensor norms and the gradient-noise-scale parts, as a "diag" metrics row."""
    tensors = []
    for v, g, w0, st in zip(loop.vars, grads, before, loop.opt.state):
        dw = v - w0
        trust = st.get("trust_ratio")
        tensors.append(
            dict(
                name=v.name,
                w_norm=float(tf.norm(w0)),
                g_norm=float(tf.norm(g)),
                update_norm=float(tf.norm(dw)),
                mean_abs_g=float(tf.reduce_mean(tf.abs(g))),
                mean_abs_dw=float(tf.reduce_mean(tf.abs(dw))),
                trust_ratio=None if trust is None else float(trust),
            )
        )
    global_sq = sum(float(tf.reduce_sum(tf.square(g))) for g in grads)
    micro = float(
        loop.hvd.allreduce(tf.constant(sum(micro_sq) / max(len(micro_sq), 1), tf.float64), op=loop.hvd.Average)
    )
    parts = noise_scale_parts(micro, global_sq, loop.spec.local_batch, loop.global_batch)
    loop.metrics.write(
        "diag",
        step=step,
        loss=loss,
        tensors=tensors,
        micro_grad_sq=micro,
        global_grad_sq=global_sq,
        noise_g2=parts[0] if parts else None,
        noise_trace=parts[1] if parts else None,
    )

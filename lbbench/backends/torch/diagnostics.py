"""Per-tensor diagnostics and the gradient-noise scale (docs/methods.md section 9), every
``diag_every`` steps; off (0) by default so they cost nothing unless asked for."""

from __future__ import annotations

import torch

from lbbench.backends.torch.loop import grouped_allreduce
from lbbench.worker.noise_scale import noise_scale_parts


class Diagnostics:
    def __init__(self, model: torch.nn.Module, optimizer, every: int):
        self.every = every
        self.names = {p: n for n, p in model.named_parameters()}
        self.optimizer = optimizer
        self._micro_sq: list[float] = []

    def active(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    # -- micro-batch gradients (inside the accumulation loop)
    def begin_step(self, params):
        self._micro_sq, self._prev = [], [torch.zeros_like(p) for p in params]

    def after_micro(self, params, accum: int, loss_scale: float = 1.0):
        """The micro-batch gradient is accum x the increase of .grad (losses are scaled by 1/accum),
        divided by the fp16 loss scale when there is one: the global gradient it is compared with
        has been unscaled by the time the row is written, so both must be."""
        sq = 0.0
        for p, prev in zip(params, self._prev):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            sq += float(((g - prev) * (accum / loss_scale)).pow(2).sum())
            prev.copy_(g)
        self._micro_sq.append(sq)

    def micro(self, grads, scale: float = 1.0) -> None:
        """A micro-batch gradient given whole (EXTRAP-SGD takes each one fresh, at its own
        extrapolated point), times ``scale`` (1 / the fp16 loss scale)."""
        self._micro_sq.append(sum(float((g * scale).pow(2).sum()) for g in grads))

    def row(self, params, before: list[torch.Tensor], hvd, b: int, B: int, grads=None) -> dict:
        """After the optimizer step: per-tensor norms, and the noise-scale parts. ``grads``: the
        averaged gradient when the step has replaced .grad (K-FAC preconditions it in place)."""
        grads = [p.grad for p in params] if grads is None else grads
        tensors = []
        for p, g, w0 in zip(params, grads, before):
            dw = p.detach() - w0
            state = self.optimizer.state.get(p, {})
            trust = state.get("trust_ratio")
            tensors.append(
                dict(
                    name=self.names.get(p, "?"),
                    w_norm=float(w0.norm()),
                    g_norm=float(g.norm()),
                    update_norm=float(dw.norm()),
                    mean_abs_g=float(g.abs().mean()),
                    mean_abs_dw=float(dw.abs().mean()),
                    trust_ratio=None if trust is None else float(trust),
                )
            )
        global_sq = sum(float(g.pow(2).sum()) for g in grads)
        micro = torch.tensor(sum(self._micro_sq) / max(len(self._micro_sq), 1), dtype=torch.float64)
        micro_sq = float(grouped_allreduce(hvd, [micro], "lbbench.diag.micro", op=hvd.Average)[0])
        parts = noise_scale_parts(micro_sq, global_sq, b, B)
        return dict(
            tensors=tensors,
            micro_grad_sq=micro_sq,
            global_grad_sq=global_sq,
            noise_g2=parts[0] if parts else None,
            noise_trace=parts[1] if parts else None,
        )

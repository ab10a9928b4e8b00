"""CBLR (docs/methods.md section 6; formula and [lbbench] choices in lbbench/methods/cblr.py)."""

from __future__ import annotations

import numpy as np
import torch

from lbbench.backends.torch.optim import momentum_inside, rule
from lbbench.methods.cblr import rademacher


def hutchinson_diag(grads, params, samples: int, rng: np.random.Generator, order=None) -> list[torch.Tensor]:
    """E_z[z * (H z)] = diag(H) for Rademacher z; ``grads`` must carry a graph (create_graph).
    Probes are drawn tensor by tensor in ``order`` (the model's parameter order, which the
    TensorFlow model shares), whatever order ``params`` come in."""
    order = list(order) if order is not None else list(params)
    est = [torch.zeros_like(p) for p in params]
    for _ in range(samples):
        drawn = {id(p): z for p, z in zip(order, rademacher(rng, [p.shape for p in order]))}
        zs = [torch.from_numpy(drawn[id(p)]).to(p.device, p.dtype) for p in params]
        hz = torch.autograd.grad(grads, params, grad_outputs=zs, retain_graph=True)
        for e, z, h in zip(est, zs, hz):
            e.add_(z * h, alpha=1.0 / samples)
    return est


class CBLR(torch.optim.Optimizer):
    def __init__(self, groups, lr, momentum, weight_decay, floor, ema):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, floor=floor))
        self.ema = ema

    def set_curvature(self, params, diag):
        """A refresh's estimate, averaged into the running one (its weight: curvature_ema)."""
        for p, h in zip(params, diag):
            old = self.state[p].get("hdiag")
            self.state[p]["hdiag"] = (
                h.detach() if old is None else old.mul(1 - self.ema).add_(h.detach(), alpha=self.ema)
            )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if group["excluded"] or "hdiag" not in state:
                    scaled = g.mul(lr)
                else:
                    # tensor ops only (no host sync): a zero estimate selects plain momentum SGD
                    h = state["hdiag"].abs()
                    mean = h.mean()
                    known = mean > 0
                    denom = torch.where(known, torch.maximum(h, group["floor"] * mean), torch.ones_like(h))
                    radius = (1 + g * g).pow(1.5) / denom
                    scaled = torch.where(known, g.add(p, alpha=wd).mul_(radius), g).mul_(lr)
                momentum_inside(state, p, scaled, mu)


@rule("cblr")
def build(groups, hp, lr):
    return CBLR(groups, lr, hp["momentum"], hp["weight_decay"], hp["curvature_floor"], hp["curvature_ema"])

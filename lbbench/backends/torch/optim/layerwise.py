"""MCLR and PercentDelta (docs/methods.md section 6; lbbench/methods/layerwise.py has the formulas)."""

from __future__ import annotations

import torch

from lbbench.backends.torch.optim import momentum_inside, rule


def median(x: torch.Tensor) -> torch.Tensor:
    """numpy's median (mean of the two middle values for an even count); torch.median
    returns the lower one. kthvalue is O(n), no full sort."""
    flat = x.reshape(-1)
    n = flat.numel()
    hi = flat.kthvalue(n // 2 + 1).values
    return hi if n % 2 else (hi + flat.kthvalue(n // 2).values) / 2


class MCLR(torch.optim.Optimizer):
    def __init__(self, groups, lr, momentum, weight_decay):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["excluded"]:
                    scaled = g.mul(lr)
                else:
                    mw, mg = median(p.abs()), median(g.abs())
                    ratio = torch.where((mw > 0) & (mg > 0), mw / (mg + wd * mw), torch.ones_like(mw))
                    self.state[p]["trust_ratio"] = ratio
                    scaled = g.add(p, alpha=wd).mul_(ratio * lr)
                momentum_inside(self.state[p], p, scaled, group["momentum"])


class PercentDelta(torch.optim.Optimizer):
    def __init__(self, groups, lr, momentum, weight_decay):
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["excluded"]:  # plain momentum SGD: a zero-init BN shift must move at the LR
                    momentum_inside(self.state[p], p, g.mul(group["lr"]), group["momentum"])
                    continue
                shifted = p + torch.where(p >= 0, 1e-6, -1e-6)
                eta = group["lr"] / ((g / shifted).abs().mean() + 1e-5)
                self.state[p]["trust_ratio"] = eta / group["lr"] if group["lr"] else eta
                momentum_inside(self.state[p], p, g.add(p, alpha=wd).mul_(eta), group["momentum"])


@rule("mclr")
def build_mclr(groups, hp, lr):
    return MCLR(groups, lr, hp["momentum"], hp["weight_decay"])


@rule("percentdelta")
def build_percentdelta(groups, hp, lr):
    return PercentDelta(groups, lr, hp["momentum"], hp["weight_decay"])

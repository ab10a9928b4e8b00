"""LARS, MLPerf form (docs/methods.md section 2; lbbench/methods/lars.py has the formula).

The trust ratio is computed with tensor ops (torch.where), not Python branches, so a GPU
step never synchronises with the host.
"""

from __future__ import annotations

import torch

from lbbench.backends.torch.optim import momentum_inside, rule


class LARS(torch.optim.Optimizer):
    def __init__(self, groups, lr, momentum, nesterov, weight_decay, eta, eps):
        super().__init__(
            groups, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, eta=eta, eps=eps)
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["excluded"]:
                    scaled = g.mul(lr)
                else:
                    wn, gn = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where(
                        (wn > 0) & (gn > 0), group["eta"] * wn / (gn + wd * wn + group["eps"]), torch.ones_like(wn)
                    )
                    scaled = g.add(p, alpha=wd).mul_(trust * lr)
                self.state[p]["trust_ratio"] = 1.0 if group["excluded"] else trust
                momentum_inside(self.state[p], p, scaled, mu, group["nesterov"])


@rule("lars")
def build(groups, hp, lr):
    return LARS(groups, lr, hp["momentum"], hp["nesterov"], hp["weight_decay"], hp["eta"], hp["eps"])

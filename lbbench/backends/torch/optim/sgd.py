"""SGD with momentum (docs/methods.md section 1; Goyal et al. 2017).

u = g + beta w (beta = 0 on excluded tensors), then either
  lr_convention 'outside' (torch.optim.SGD): b <- mu b + u ;  w <- w - lr (u + mu b if nesterov else b)
  lr_convention 'inside'  (MLPerf, K-FAC):   v <- mu v + lr u ; w <- w - (mu v + lr u if nesterov else v)
Both start from a zero buffer, so the first step is w <- w - lr u in either convention.
"""

from __future__ import annotations

import torch

from lbbench.backends.torch.optim import rule


class MomentumSGD(torch.optim.Optimizer):
    def __init__(self, groups, lr: float, momentum: float, nesterov: bool, weight_decay: float, lr_convention: str):
        super().__init__(
            groups,
            dict(
                lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, inside=lr_convention == "inside"
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            wd = 0.0 if group["excluded"] else group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                u = p.grad.add(p, alpha=wd) if wd else p.grad.clone()
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                if group["inside"]:
                    buf.mul_(mu).add_(u, alpha=lr)
                    p.sub_(buf.mul(mu).add_(u, alpha=lr) if group["nesterov"] else buf)
                else:
                    buf.mul_(mu).add_(u)
                    p.sub_(u.add(buf, alpha=mu) if group["nesterov"] else buf, alpha=lr)


@rule("sgd")
def build(groups, hp, lr):
    return MomentumSGD(groups, lr, hp["momentum"], hp["nesterov"], hp["weight_decay"], hp["lr_convention"])

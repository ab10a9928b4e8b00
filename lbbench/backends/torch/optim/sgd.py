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
        # the per-tensor formulas above, applied to all of a group's tensors at once (torch's
        # _foreach ops: the same elementwise kernels, one Python call per group, not per tensor)
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            lr, mu = group["lr"], group["momentum"]
            wd = 0.0 if group["excluded"] else group["weight_decay"]
            grads = [p.grad for p in ps]
            us = torch._foreach_add(grads, ps, alpha=wd) if wd else grads  # u is only read below
            bufs = []
            for p in ps:
                state = self.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, mu)
            if group["inside"]:
                torch._foreach_add_(bufs, us, alpha=lr)
                if group["nesterov"]:
                    step = torch._foreach_mul(bufs, mu)
                    torch._foreach_add_(step, us, alpha=lr)
                    torch._foreach_sub_(ps, step)
                else:
                    torch._foreach_sub_(ps, bufs)
            else:
                torch._foreach_add_(bufs, us)
                torch._foreach_sub_(ps, torch._foreach_add(us, bufs, alpha=mu) if group["nesterov"] else bufs, alpha=lr)


@rule("sgd")
def build(groups, hp, lr):
    return MomentumSGD(groups, lr, hp["momentum"], hp["nesterov"], hp["weight_decay"], hp["lr_convention"])

"""LAMB, paper form with bias correction (docs/methods.md section 3; lbbench/methods/lamb.py)."""

from __future__ import annotations

import torch

from lbbench.backends.torch.optim import rule


class LAMB(torch.optim.Optimizer):
    def __init__(self, groups, lr, beta1, beta2, eps, weight_decay, clamp, bias_correction):
        super().__init__(
            groups,
            dict(
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                weight_decay=weight_decay,
                clamp=clamp,
                bias_correction=bias_correction,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2, lr = group["beta1"], group["beta2"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(b1).add_(g, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m, v = state["m"], state["v"]
                if group["bias_correction"]:
                    m, v = m / (1 - b1**t), v / (1 - b2**t)
                u = m / (v.sqrt() + group["eps"])
                if group["excluded"]:
                    state["trust_ratio"] = 1.0
                    p.sub_(u, alpha=lr)
                    continue
                u.add_(p, alpha=group["weight_decay"])
                wn, un = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
                if group["clamp"] > 0:
                    wn = wn.clamp(max=group["clamp"])
                ratio = torch.where((wn > 0) & (un > 0), wn / un, torch.ones_like(wn))
                state["trust_ratio"] = ratio
                p.sub_(u.mul_(ratio * lr))


@rule("lamb")
def build(groups, hp, lr):
    return LAMB(groups, lr, hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"], hp["clamp"], hp["bias_correction"])

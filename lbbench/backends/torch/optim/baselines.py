"""Plain baselines: torch.optim's own Adam, AdamW, Adagrad, RMSprop (docs/methods.md section 8),
with weight decay off on the excluded group."""

from __future__ import annotations

import torch

from lbbench.backends.torch.optim import rule


def _groups(groups, wd):
    return [dict(g, weight_decay=0.0 if g["excluded"] else wd) for g in groups]


@rule("adam")
def build_adam(groups, hp, lr):
    return torch.optim.Adam(_groups(groups, hp["weight_decay"]), lr=lr, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])


@rule("adamw")
def build_adamw(groups, hp, lr):
    return torch.optim.AdamW(
        _groups(groups, hp["weight_decay"]), lr=lr, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"]
    )


@rule("adagrad")
def build_adagrad(groups, hp, lr):
    return torch.optim.Adagrad(
        _groups(groups, hp["weight_decay"]), lr=lr, eps=hp["eps"], initial_accumulator_value=hp["initial_accumulator"]
    )


@rule("rmsprop")
def build_rmsprop(groups, hp, lr):
    return torch.optim.RMSprop(
        _groups(groups, hp["weight_decay"]), lr=lr, alpha=hp["alpha"], eps=hp["eps"], momentum=hp["momentum"]
    )

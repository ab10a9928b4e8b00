"""PyTorch implementations of the registry's methods, one module each, looked up by name.

Every implementation is a ``torch.optim.Optimizer`` whose param groups carry ``excluded``
(BN and bias tensors: no weight decay, no trust ratio; METHODS.md section 0) and whose
``lr`` the training loop sets from the shared schedule before each step. The gradient it
sees is already the global-batch average (after accumulation and Horovod allreduce).
"""
from __future__ import annotations

import importlib

import torch
from torch import nn


# YAML name -> (module under this package, its builder(groups, hparams, lr) -> Optimizer)
BUILDERS = {
    "sgd": ("sgd", "build"),
    "lars": ("lars", "build"),
    "lamb": ("lamb", "build"),
    "adam": ("baselines", "build_adam"),
    "adamw": ("baselines", "build_adamw"),
    "adagrad": ("baselines", "build_adagrad"),
    "rmsprop": ("baselines", "build_rmsprop"),
    "mclr": ("layerwise", "build_mclr"),
    "percentdelta": ("layerwise", "build_percentdelta"),
    "cblr": ("cblr", "build"),
}


def param_groups(model: nn.Module, exclude_bn_bias: bool = True) -> list[dict]:
    """Two groups: regular tensors, and excluded ones (BN scale/shift and every bias)."""
    regular, excluded = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_excl = isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"
            (excluded if (is_excl and exclude_bn_bias) else regular).append(p)
    return [g for g in ({"params": regular, "excluded": False}, {"params": excluded, "excluded": True}) if g["params"]]


def momentum_inside(state: dict, p, scaled, mu: float, nesterov: bool = False) -> None:
    """The "LR inside" momentum step shared by LARS, MCLR, PercentDelta and CBLR (METHODS.md
    section 0): v <- mu v + scaled; w <- w - v (Nesterov: w <- w - (mu v + scaled))."""
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(p)
    buf.mul_(mu).add_(scaled)
    p.sub_(buf.mul(mu).add_(scaled) if nesterov else buf)


def build_optimizer(method: str, hparams: dict, model: nn.Module, lr: float):
    if method not in BUILDERS:
        raise NotImplementedError(f"method {method!r} has no PyTorch optimizer")
    module, fn = BUILDERS[method]
    builder = getattr(importlib.import_module(f"lbbench.backends.torch.optim.{module}"), fn)
    return builder(param_groups(model, hparams.get("exclude_bn_bias", True)), hparams, lr)

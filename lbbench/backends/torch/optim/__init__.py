"""PyTorch implementations of the registry's methods, one module each, looked up by name.

Every implementation is a ``torch.optim.Optimizer`` whose param groups carry ``excluded``
(BN and bias tensors: no weight decay, no trust ratio; METHODS.md section 0) and whose
``lr`` the training loop sets from the shared schedule before each step. The gradient it
sees is already the global-batch average (after accumulation and Horovod allreduce).
"""
from __future__ import annotations

import importlib

from torch import nn

from lbbench.spec import RunSpec

# YAML name -> module under this package defining build(groups, hparams) -> Optimizer
MODULES = {"sgd": "sgd"}


def param_groups(model: nn.Module, exclude_bn_bias: bool = True) -> list[dict]:
    """Two groups: regular tensors, and excluded ones (BN scale/shift and every bias)."""
    regular, excluded = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_excl = isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"
            (excluded if (is_excl and exclude_bn_bias) else regular).append(p)
    return [g for g in ({"params": regular, "excluded": False}, {"params": excluded, "excluded": True}) if g["params"]]


def build_optimizer(spec: RunSpec, model: nn.Module):
    if spec.method not in MODULES:
        raise NotImplementedError(f"method {spec.method!r} has no PyTorch implementation yet")
    module = importlib.import_module(f"lbbench.backends.torch.optim.{MODULES[spec.method]}")
    groups = param_groups(model, spec.hparams.get("exclude_bn_bias", True))
    return module.build(groups, spec.hparams, spec.lr.peak_lr)

"""PyTorch update rules, one module per method family, in one table: ``RULES`` maps a rule
name (the registry's ``update_rule``, lbbench/methods/registry.py) to a builder
``(param groups, hparams, lr) -> torch.optim.Optimizer``. A module adds its rules with the
``@rule(name)`` decorator; every module of this package is imported below, so a new rule is
one new module (or function) and nothing else.

Every optimizer's param groups carry ``excluded`` (BN and bias tensors: no weight decay, no
trust ratio; docs/methods.md section 0) and its ``lr`` is set by the training loop from the
shared schedule before each step. The gradient it sees is already the global-batch average
(after accumulation and the Horovod allreduce).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Builder = Callable[[list[dict[str, Any]], dict[str, Any], float], torch.optim.Optimizer]
RULES: dict[str, Builder] = {}


def rule(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        assert name not in RULES, f"update rule {name!r} defined twice"
        RULES[name] = builder
        return builder

    return add


def param_groups(model: nn.Module, exclude_bn_bias: bool = True) -> list[dict[str, Any]]:
    """Two groups: regular tensors, and excluded ones (BN scale/shift and every bias)."""
    regular: list[nn.Parameter] = []
    excluded: list[nn.Parameter] = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_excl = isinstance(module, nn.modules.batchnorm._BatchNorm) or name == "bias"
            (excluded if (is_excl and exclude_bn_bias) else regular).append(p)
    return [g for g in ({"params": regular, "excluded": False}, {"params": excluded, "excluded": True}) if g["params"]]


def momentum_inside(
    state: dict[str, Any], p: torch.Tensor, scaled: torch.Tensor, mu: float, nesterov: bool = False
) -> None:
    """The "LR inside" momentum step shared by LARS, MCLR, PercentDelta and CBLR
    (docs/methods.md section 0): v <- mu v + scaled; w <- w - v (Nesterov: w <- w - (mu v + scaled))."""
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(p)
    buf.mul_(mu).add_(scaled)
    p.sub_(buf.mul(mu).add_(scaled) if nesterov else buf)


def build_optimizer(rule_name: str, hparams: dict[str, Any], model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if rule_name not in RULES:
        raise NotImplementedError(
            f"update rule {rule_name!r} has no PyTorch implementation "
            f"(lbbench/backends/torch/optim/); known: {', '.join(sorted(RULES))}"
        )
    return RULES[rule_name](param_groups(model, hparams.get("exclude_bn_bias", True)), hparams, lr)


for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")

"""Framework-free method registry: YAML name -> MethodInfo (timm's OptimInfo idea).

A record says which hyperparameters a method takes (with defaults), how it is logged in
MLLOG, which training-step strategy and update rule the backends use for it, and what it
needs from the training loop. Every module in this package is imported here, so a new method
is one new module (plus its update rule in each backend, lbbench/backends/<fw>/optim/);
tests are parametrised over ``REGISTRY``, so it is tested the moment it is registered.
"""

import importlib
import pkgutil

from lbbench.methods.registry import REGISTRY, HParam, MethodInfo, get_method, resolve_hparams

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["REGISTRY", "HParam", "MethodInfo", "get_method", "resolve_hparams"]

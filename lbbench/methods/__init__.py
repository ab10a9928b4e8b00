"""Framework-free method registry: YAML name -> MethodInfo (timm's OptimInfo idea).

A record says which hyperparameters a method takes (with defaults), how it is logged in
MLLOG, and what it needs from the training loop. Backends look up their implementation by
the same name; tests are parametrised over ``REGISTRY`` so a new method is tested the moment
it is registered.
"""
from lbbench.methods import all as _all  # noqa: F401  (registers)
from lbbench.methods.registry import REGISTRY, HParam, MethodInfo, get_method, resolve_hparams

__all__ = ["REGISTRY", "HParam", "MethodInfo", "get_method", "resolve_hparams"]

"""Importing this module registers every method (one module per method)."""
from lbbench.methods import baselines, lamb, lars, layerwise, sgd  # noqa: F401

"""Importing this module registers every method (one module per method)."""
from lbbench.methods import baselines, cblr, extrap_sgd, gradientmix, lamb, lars, layerwise, sgd  # noqa: F401

"""Importing this module registers every method (one module per method)."""
from lbbench.methods import baselines, cblr, extrap_sgd, gradientmix, kfac, lamb, lars, layerwise, sgd  # noqa: F401

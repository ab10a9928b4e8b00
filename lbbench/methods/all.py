"""Importing this module registers every method (one module per method)."""
from lbbench.methods import sgd  # noqa: F401

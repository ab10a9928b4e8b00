"""The PyTorch backend (torch 2.13, horovod.torch, DALI)."""

from lbbench.backends import require

require("torch", "PyTorch")

"""PyTorch checkpoints: lbbench/worker/checkpoints.py with torch.save / torch.load. Payloads are
CPU copies and load onto the CPU: a checkpoint or final.pt written on a GPU node reads on a
login node, and each worker moves what it loads to its own device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lbbench.worker import checkpoints


def save(run_dir: Path, epoch: int, payload: dict[str, Any], keep: int = 2) -> Path:
    return checkpoints.save(run_dir, epoch, to_cpu(payload), torch.save, ".pt", keep)


def load_newest(run_dir: Path) -> dict[str, Any] | None:
    return checkpoints.load_newest(run_dir, lambda f: torch.load(f, weights_only=False, map_location="cpu"), ".pt")


def to_cpu(obj: Any) -> Any:
    """A copy with every tensor on the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj

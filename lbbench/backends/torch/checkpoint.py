"""PyTorch checkpoints: lbbench/checkpoint_files.py with torch.save / torch.load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lbbench.worker import checkpoints as checkpoint_files


def save(run_dir: Path, epoch: int, payload: dict[str, Any]) -> Path:
    return checkpoint_files.save(run_dir, epoch, payload, torch.save, ".pt")


def load_newest(run_dir: Path) -> dict[str, Any] | None:
    return checkpoint_files.load_newest(run_dir, lambda f: torch.load(f, weights_only=False), ".pt")

"""TensorFlow checkpoints: lbbench/worker/checkpoints.py with pickle (the payload is NumPy
arrays: variables, optimizer state, K-FAC factors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lbbench.worker import checkpoints


def save(run_dir: Path, epoch: int, payload: dict[str, Any], keep: int = 2) -> Path:
    return checkpoints.save(run_dir, epoch, payload, keep=keep)


def load_newest(run_dir: Path) -> dict[str, Any] | None:
    return checkpoints.load_newest(run_dir)

"""Checkpoint and resume for the PyTorch worker (the cluster issue: a killed job loses at
most the work since its last checkpoint).

Rank 0 writes ``ckpt/epoch-NNNN.pt`` atomically (temporary file, fsync, rename) at the end of
every ``checkpoint_every``-th epoch: model (with BN buffers), optimizer and method state, the
training position (the next epoch starts at step 0, so the sampler needs only the epoch), the
torch RNG, the run's bookkeeping (step, best top-1, samples, elapsed clock, ...) and the byte
lengths of mllog.txt and metrics.jsonl at that moment. On restart, rank 0 loads the newest
checkpoint that reads back completely, cuts the two logs back to those lengths (so the MLLOG
stays one parseable run with a single run_start), and broadcasts the state to every rank.
Older checkpoints are removed once a newer one is on disk.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lbbench.store import atomic_write

NAME = re.compile(r"epoch-(\d+)\.pt$")


def save(run_dir: Path, epoch: int, payload: dict[str, Any]) -> Path:
    ckdir = run_dir / "ckpt"
    ckdir.mkdir(exist_ok=True)
    payload = {**payload, "log_bytes": {n: _size(run_dir / n) for n in ("mllog.txt", "metrics.jsonl")}}
    final = ckdir / f"epoch-{epoch:04d}.pt"
    atomic_write(final, lambda f: torch.save(payload, f), binary=True)
    for old in ckdir.glob("epoch-*.pt"):
        if old != final:
            old.unlink(missing_ok=True)
    return final


def load_newest(run_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a torn or corrupt file is skipped, never trusted."""
    ckdir = run_dir / "ckpt"
    found = sorted((int(m.group(1)), p) for p in ckdir.glob("epoch-*.pt") if (m := NAME.search(p.name)))
    for _, path in reversed(found):
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - any unreadable checkpoint is simply not used
            continue
    return None


def rewind_logs(run_dir: Path, log_bytes: dict[str, int]) -> None:
    for name, size in log_bytes.items():
        path = run_dir / name
        if path.exists() and path.stat().st_size > size:
            with open(path, "r+b") as f:
                f.truncate(size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0

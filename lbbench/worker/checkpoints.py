"""Checkpoint files for every worker (the cluster issue: a killed job loses at most the work
since its last checkpoint). Framework-free: each backend passes its serialiser (torch.save,
pickle of NumPy arrays).

Rank 0 writes ``ckpt/epoch-NNNN<suffix>`` atomically (temporary file, fsync, rename) at the end of
every ``checkpoint_every``-th epoch: model (with BN buffers), optimizer and method state, the
training position (the next epoch starts at step 0, so the sampler needs only the epoch), the
framework's RNG, the run's bookkeeping (step, best top-1, samples, elapsed clock, ...) and the byte
lengths of mllog.txt and metrics.jsonl at that moment. On restart, rank 0 loads the newest
checkpoint that reads back completely, cuts the two logs back to those lengths (so the MLLOG
stays one parseable run with a single run_start), and broadcasts the state to every rank.
Older checkpoints are removed once a newer one is on disk.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lbbench.store.files import atomic_write


def save(
    run_dir: Path,
    epoch: int,
    payload: dict[str, Any],
    dump: Callable[[Any, IO[bytes]], object] = pickle.dump,
    suffix: str = ".pkl",
) -> Path:
    ckdir = run_dir / "ckpt"
    ckdir.mkdir(exist_ok=True)
    payload = {**payload, "log_bytes": {n: _size(run_dir / n) for n in ("mllog.txt", "metrics.jsonl")}}
    final = ckdir / f"epoch-{epoch:04d}{suffix}"
    atomic_write(final, lambda f: dump(payload, f), binary=True)
    for old in ckdir.glob("epoch-*"):
        if old != final and not old.name.startswith("."):
            old.unlink(missing_ok=True)
    return final


def load_newest(
    run_dir: Path, load: Callable[[IO[bytes]], Any] = pickle.load, suffix: str = ".pkl"
) -> dict[str, Any] | None:
    """The newest checkpoint that loads; a torn or corrupt file is skipped, never trusted."""
    name = re.compile(r"epoch-(\d+)" + re.escape(suffix) + "$")
    found = sorted((int(m.group(1)), p) for p in (run_dir / "ckpt").glob("epoch-*") if (m := name.search(p.name)))
    for _, path in reversed(found):
        try:
            with open(path, "rb") as f:
                state: dict[str, Any] = load(f)
                return state
        except Exception:
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

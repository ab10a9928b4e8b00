"""Checkpoint files for every worker (framework-free: each backend passes its serialiser,
torch.save or pickle): a killed job loses at most the work since its last checkpoint, and a
damaged checkpoint never poisons a run.

Rank 0 writes ``ckpt/epoch-NNNN<suffix>`` atomically (temporary file, fsync, rename) at the end of
every ``checkpoint_every``-th epoch - model (with BN buffers), optimizer and method state, the
training position, the RNG, the run's bookkeeping and the byte lengths of mllog.txt and
metrics.jsonl at that moment - and then ``epoch-NNNN<suffix>.sha256``, the digest of the file as
written, re-read from disk. A checkpoint is *verified* when its digest file exists and matches;
the digest is written last, so a verified checkpoint is complete. The newest ``keep`` verified
checkpoints are kept: a predecessor is deleted only after its successor is verified.

On restart, rank 0 loads the newest verified checkpoint, skipping (and naming) any whose digest
does not match - truncated, garbled, a torn write - and cuts the two logs back to the recorded
lengths, so the MLLOG stays one run with a single run_start. A verified checkpoint that then
fails to load is not skipped: that is a real fault (a framework or device mismatch), raised,
never turned into a silent restart from epoch 1. Torn temporary files are removed at the next
start.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lbbench.store.files import atomic_write, atomic_write_text

NAME = re.compile(r"^epoch-(\d+)(\.[A-Za-z0-9]+)$")


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Every checkpoint file (verified or not), newest first."""
    found = []
    for p in (Path(run_dir) / "ckpt").glob("epoch-*"):
        m = NAME.match(p.name)
        if m and m.group(2) != ".sha256":
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def is_verified(path: Path) -> bool:
    sidecar = path.with_name(path.name + ".sha256")
    try:
        return sidecar.read_text().strip() == digest(path)
    except OSError:
        return False


def verified(run_dir: Path) -> list[tuple[int, Path]]:
    """The verified checkpoints, newest first."""
    return [(e, p) for e, p in checkpoints(run_dir) if is_verified(p)]


def damaged(run_dir: Path) -> list[Path]:
    """Checkpoint files whose digest is missing or does not match: never loaded."""
    return [p for _, p in checkpoints(run_dir) if not is_verified(p)]


def save(
    run_dir: Path,
    epoch: int,
    payload: dict[str, Any],
    dump: Callable[[Any, IO[bytes]], object] = pickle.dump,
    suffix: str = ".pkl",
    keep: int = 2,
) -> Path:
    ckdir = run_dir / "ckpt"
    ckdir.mkdir(exist_ok=True)
    payload = {**payload, "log_bytes": {n: _size(run_dir / n) for n in ("mllog.txt", "metrics.jsonl")}}
    final = ckdir / f"epoch-{epoch:04d}{suffix}"
    atomic_write(final, lambda f: dump(payload, f), binary=True)
    atomic_write_text(final.with_name(final.name + ".sha256"), digest(final) + "\n")
    if is_verified(final):  # re-read from disk: only then may older checkpoints go
        for _, old in verified(run_dir)[keep:]:
            old.with_name(old.name + ".sha256").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return final


def load_newest(
    run_dir: Path, load: Callable[[IO[bytes]], Any] = pickle.load, suffix: str = ".pkl"
) -> dict[str, Any] | None:
    """The newest verified checkpoint; damaged ones are named on stderr and skipped."""
    for _, path in checkpoints(run_dir):
        if path.suffix != suffix:
            continue
        if not is_verified(path):
            print(f"lbbench: {path}: damaged checkpoint (digest missing or different), not used", file=sys.stderr)
            continue
        with open(path, "rb") as f:
            state: dict[str, Any] = load(f)
        return state
    return None


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files of writes that were killed mid-way (``.epoch-*.tmp``)."""
    torn = sorted((Path(run_dir) / "ckpt").glob(".epoch-*.tmp"))
    for p in torn:
        p.unlink(missing_ok=True)
    return torn


def rewind_logs(run_dir: Path, log_bytes: dict[str, int]) -> None:
    for name, size in log_bytes.items():
        path = run_dir / name
        if path.exists() and path.stat().st_size > size:
            with open(path, "r+b") as f:
                f.truncate(size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0

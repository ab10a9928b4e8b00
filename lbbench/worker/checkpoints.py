"""Checkpoint files for every worker (framework-free: each backend passes its serialiser,
torch.save or pickle): a killed job loses at most the work since its last checkpoint, and a
damaged checkpoint never poisons a run.

Rank 0 writes ``ckpt/epoch-NNNN<suffix>`` atomically (temporary file, fsync, rename) at the end of
every ``checkpoint_every``-th epoch - model (with BN buffers), optimizer and method state, the
training position, the RNG, the run's bookkeeping and the byte lengths of mllog.txt and
metrics.jsonl at that moment - and then ``epoch-NNNN<suffix>.meta.json``: the digest of the file
as written, re-read from disk, and those log lengths. A checkpoint is *verified* when its meta
file exists and the digest matches (written last: a verified checkpoint is complete), and
*usable* when it is verified and the logs are still at least as long as it recorded (a
truncated log cannot be rewound to it). The newest ``keep`` verified checkpoints are kept: a
predecessor is deleted only after its successor is verified.

On restart, rank 0 loads the newest usable checkpoint, naming any it skips - truncated,
garbled, a torn write, logs shorter than recorded - and cuts the two logs back to the recorded
lengths, so the MLLOG stays one run with a single run_start. The runner asks the same question
(``usable``) before it decides between resuming and starting again. A verified checkpoint that then
fails to load is not skipped: that is a real fault (a framework or device mismatch), raised,
never turned into a silent restart from epoch 1. Torn temporary files are removed at the next
start.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from lbbench.store.files import atomic_write, write_json
from lbbench.worker import faults

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
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def meta(path: Path) -> dict[str, Any] | None:
    """The checkpoint's digest and recorded log lengths, when its meta file reads."""
    try:
        data = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_verified(path: Path) -> bool:
    m = meta(path)
    try:
        return m is not None and m.get("sha256") == digest(path)
    except OSError:
        return False


def verified(run_dir: Path) -> list[tuple[int, Path]]:
    """The verified checkpoints, newest first."""
    return [(e, p) for e, p in checkpoints(run_dir) if is_verified(p)]


def usable(run_dir: Path) -> list[tuple[int, Path]]:
    """Verified checkpoints whose recorded log lengths the logs still have, newest first."""
    out = []
    for e, p in verified(run_dir):
        m = meta(p) or {}
        if all(_size(Path(run_dir) / name) >= size for name, size in m.get("log_bytes", {}).items()):
            out.append((e, p))
    return out


def damaged(run_dir: Path) -> list[Path]:
    """Checkpoint files that are not usable (digest missing or different, or logs cut shorter)."""
    ok = {p for _, p in usable(run_dir)}
    return [p for _, p in checkpoints(run_dir) if p not in ok]


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

    def write(f: IO[bytes]) -> None:
        dump(payload, f)
        faults.reach("checkpoint_write", 0)  # the tests' kill during a write (a torn temporary)

    atomic_write(final, write, binary=True)
    faults.reach("checkpoint_digest", 0)
    write_json(_meta_path(final), {"sha256": digest(final), "epoch": epoch, "log_bytes": payload["log_bytes"]})
    if is_verified(final):  # re-read from disk: only then may older checkpoints go
        for _, old in verified(run_dir)[keep:]:
            _meta_path(old).unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return final


def load_newest(
    run_dir: Path, load: Callable[[IO[bytes]], Any] = pickle.load, suffix: str = ".pkl"
) -> dict[str, Any] | None:
    """The newest usable checkpoint; the ones skipped are named on stderr."""
    ok = {p for _, p in usable(run_dir)}
    for _, path in checkpoints(run_dir):
        if path.suffix != suffix:
            continue
        if path not in ok:
            why = "digest missing or different" if not is_verified(path) else "the logs are shorter than it recorded"
            print(f"lbbench: {path}: not usable ({why}), skipped", file=sys.stderr)
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

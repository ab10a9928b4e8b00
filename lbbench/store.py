"""Results layout and file safety: atomic writes, per-run locks, completion bookkeeping.

    results/<suite>/<run_id>/run.yaml      the RunSpec the worker ran
                            mllog.txt      MLPerf log (rank 0)
                            metrics.jsonl  per-step / per-epoch rows
                            summary.json   written last, atomically: its presence = finished
                            worker.log     the launcher's stdout/stderr
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

FINAL_STATUSES = {"success", "not_reached", "diverged", "failed", "timeout"}
# Statuses a re-run does not repeat; "failed" and "timeout" are retried.
DONE_STATUSES = {"success", "not_reached", "diverged"}


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, rename: a
    reader sees the old file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def run_dir(results: Path, suite: str, run_id: str) -> Path:
    return Path(results) / suite / run_id


def read_summary(rdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(rdir) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(rdir: Path) -> bool:
    s = read_summary(rdir)
    return bool(s) and s.get("status") in DONE_STATUSES


def iter_run_dirs(results: Path):
    """Every directory under ``results`` that holds a run.yaml (any depth: a suite or a tree)."""
    for spec in sorted(Path(results).rglob("run.yaml")):
        yield spec.parent

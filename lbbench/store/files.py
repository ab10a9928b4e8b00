"""File safety and the results layout (lbbench/store/__init__.py): atomic writes, run
directories, and finding the runs under a results tree."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[Any]], object], binary: bool = False) -> None:
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


def iter_run_dirs(results: Path) -> Iterator[Path]:
    """Every directory under ``results`` that holds a run.yaml, or a published.json (a run imported
    from MLPerf, lbbench/mlperf/importer.py), at any depth: a suite or a tree."""
    found = {p.parent for name in ("run.yaml", "published.json") for p in Path(results).rglob(name)}
    yield from sorted(found)

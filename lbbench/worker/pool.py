"""Warm cells: one launch of np workers trains several cells in turn (framework-free).

A cell's own work - model, optimizer, input pipelines, RNG seeds, MLLOG, checkpoints, summary -
is built afresh per cell by the driver; what a launch pays once is the part that is the same
for every cell with the same np and framework: starting the processes, importing the
framework, initialising Horovod and its rendezvous. Each cell's output goes to its own
``worker.log`` (the process's stdout and stderr are pointed at it while the cell trains).

A cell that fails ends the launch (its rank's exit status): its peers may be waiting in a
collective of that cell, so going on to the next cell could pair collectives of two different
cells. The runner (lbbench/launch/runner.py) records the failed cell and starts a new launch
for the cells after it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cell_output(log: Path, header: str | None) -> Iterator[None]:
    """The process's stdout and stderr (file descriptors, so native code's output too) appended
    to ``log`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if header:
            print(header, flush=True)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def run_cells(run_dirs: Sequence[Path], lead: bool, run_cell: Callable[[Path], int]) -> int:
    """Trains each run dir in turn; the first non-zero exit status ends the launch. One run dir
    is a plain launch (its output goes wherever the launcher sends it)."""
    if len(run_dirs) == 1:
        return run_cell(run_dirs[0])
    for k, rdir in enumerate(run_dirs, 1):
        header = f"# warm launch (pid {os.getpid()}): cell {k} of {len(run_dirs)}" if lead else None
        with cell_output(rdir / "worker.log", header):
            rc = run_cell(rdir)
        if rc != 0:
            return rc
    return 0

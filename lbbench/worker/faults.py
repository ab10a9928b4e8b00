"""Fault injection for the tests (tests/faults/): ``LBBENCH_FAULT=POINT:RANK:COUNT[,...]`` makes
the worker of that rank kill itself with SIGKILL the COUNT-th time it reaches POINT - a real
crash at a named place, not a sleep and luck. Unset (always, outside the tests), every hook is
one dictionary lookup.

Points: ``allreduce`` (before a step's gradient allreduce), ``mid_epoch`` (halfway through an
epoch's steps), ``checkpoint_write`` (the checkpoint file written to its temporary name, not yet
renamed), ``checkpoint_digest`` (the checkpoint renamed, its digest not yet written), ``eval``
(at the start of an evaluation), ``after_run_stop`` (run_stop logged, the summary not yet written).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("allreduce", "mid_epoch", "checkpoint_write", "checkpoint_digest", "eval", "after_run_stop")
_plan: dict[tuple[str, int], int] | None = None
_seen: Counter[str] = Counter()


def _parse() -> dict[tuple[str, int], int]:
    out = {}
    for item in filter(None, os.environ.get("LBBENCH_FAULT", "").split(",")):
        point, rank, count = item.split(":")
        if point not in POINTS:
            raise ValueError(f"LBBENCH_FAULT: unknown point {point!r}; known: {', '.join(POINTS)}")
        out[(point, int(rank))] = int(count)
    return out


def reach(point: str, rank: int) -> None:
    """Called at each point; kills this process when the plan says so."""
    global _plan
    if _plan is None:
        _plan = _parse()
    if not _plan:
        return
    _seen[point] += 1
    if _plan.get((point, rank)) == _seen[point]:
        os.kill(os.getpid(), signal.SIGKILL)

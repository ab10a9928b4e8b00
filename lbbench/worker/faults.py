"""Fault injection for the tests (tests/faults/): ``LBBENCH_FAULT=POINT:RANK:COUNT[,...]`` makes
the worker of that rank kill itself with SIGKILL the COUNT-th time it reaches POINT - a real
crash at a named place, not a sleep and luck. ``POINT:RANK:COUNT:pause=S`` holds the worker
there for S seconds instead (its peers wait in their next collective), so a test can act on
a run that is certainly still training. Unset (always, outside the tests), every hook is one
dictionary lookup.

Points: ``allreduce`` (before a step's gradient allreduce), ``mid_epoch`` (halfway through an
epoch's steps), ``checkpoint_write`` (the checkpoint file written to its temporary name, not yet
renamed), ``checkpoint_digest`` (the checkpoint renamed, its digest not yet written), ``eval``
(at the start of an evaluation), ``after_run_stop`` (run_stop logged, the summary not yet written).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

POINTS = ("allreduce", "mid_epoch", "checkpoint_write", "checkpoint_digest", "eval", "after_run_stop")
_plan: dict[tuple[str, int], tuple[int, float | None]] | None = None
_seen: Counter[str] = Counter()


def _parse() -> dict[tuple[str, int], tuple[int, float | None]]:
    out = {}
    for item in filter(None, os.environ.get("LBBENCH_FAULT", "").split(",")):
        point, rank, count, *action = item.split(":")
        if point not in POINTS:
            raise ValueError(f"LBBENCH_FAULT: unknown point {point!r}; known: {', '.join(POINTS)}")
        pause = None
        if action:
            if not action[0].startswith("pause="):
                raise ValueError(f"LBBENCH_FAULT: unknown action {action[0]!r}; known: pause=SECONDS")
            pause = float(action[0].split("=", 1)[1])
        out[(point, int(rank))] = (int(count), pause)
    return out


def reach(point: str, rank: int) -> None:
    """Called at each point; kills this process when the plan says so."""
    global _plan
    if _plan is None:
        _plan = _parse()
    if not _plan:
        return
    _seen[point] += 1
    count, pause = _plan.get((point, rank), (0, None))
    if count == _seen[point]:
        if pause is not None:
            time.sleep(pause)
        else:
            os.kill(os.getpid(), signal.SIGKILL)

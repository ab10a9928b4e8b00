"""Waiting for an allreduce (lbbench/backends/torch/loop.py: wait) on 2 real Gloo ranks: the
same result as Horovod's synchronize, without its busy wait - a rank waiting for a late one
gives its core back (where ranks share the cores, that core is the other rank's)."""

from __future__ import annotations

import re

import pytest

from helpers import gloo_script


@pytest.mark.slow
def test_waiting_for_a_late_rank_gives_the_core_back():
    p = gloo_script(2, "backends/torch/wait_worker.py")
    lines = dict(re.findall(r"RANK (\d) (OURS .*)", p.stdout))
    assert set(lines) == {"0", "1"}, p.stdout[-2000:] + p.stderr[-2000:]
    ours_cpu, ours, theirs_cpu, theirs = re.fullmatch(
        r"OURS (\S+) (\[.*\]) HOROVOD (\S+) (\[.*\])", lines["0"]
    ).groups()
    assert ours == theirs == str([1.5 * i for i in range(4)])  # the average of i and 2i
    # rank 0 waited ~0.6 s for rank 1: Horovod's synchronize spins (sched_yield) through it,
    # lbbench's wait sleeps between polls
    assert float(theirs_cpu) > 0.3, lines["0"]  # the busy wait this replaces (a check of the probe)
    assert float(ours_cpu) < 0.2, lines["0"]  # its polls: ~0.06 s on the 2-core CI machine

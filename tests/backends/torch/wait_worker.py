"""Run by test_wait.py as 2 Gloo ranks: rank 1 joins the allreduce 0.6 s late; rank 0 reports
how much CPU its own (main) thread spent waiting for it, through lbbench's wait and through
Horovod's own synchronize, and both results."""

from __future__ import annotations

import time

import horovod.torch as hvd
import torch

from lbbench.backends.torch.loop import grouped_allreduce

LATE_S = 0.6


def timed(reduce) -> tuple[float, list[float]]:
    hvd.barrier()
    if hvd.rank() == 1:
        time.sleep(LATE_S)
    cpu0 = time.thread_time()
    out = reduce([torch.arange(4, dtype=torch.float64) * (hvd.rank() + 1)])
    return time.thread_time() - cpu0, out[0].tolist()


hvd.init()
ours_cpu, ours = timed(lambda t: grouped_allreduce(hvd, t, "test.ours", op=hvd.Average))
theirs_cpu, theirs = timed(lambda t: hvd.grouped_allreduce(t, name="test.theirs", op=hvd.Average))
print(f"RANK {hvd.rank()} OURS {ours_cpu:.3f} {ours} HOROVOD {theirs_cpu:.3f} {theirs}", flush=True)

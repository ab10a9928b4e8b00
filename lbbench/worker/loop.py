"""What both backends' training loops share (framework-free): the epoch's batch split, the
small-loss discarding switch, the step-time timers and the pass/allreduce counters.

A backend's ``Loop`` (lbbench/backends/<fw>/loop.py) adds the framework pieces: fetching a
micro-batch, forward/backward, the grouped allreduce, the optimizer update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from lbbench.spec import RunSpec
from lbbench.store.metrics import MetricsWriter
from lbbench.worker import faults

TIMED_PARTS = ("data", "compute", "allreduce", "optimizer")


class DeviceTimer(Protocol):
    """Times blocks where their work runs (a backend's, e.g. CUDA events); ``flush`` waits for
    the pending ones and adds their seconds into a ``times`` dict."""

    def begin(self) -> Any: ...

    def end(self, part: str, start: Any) -> None: ...

    def flush(self, times: dict[str, float]) -> None: ...


class LoopBase:
    def __init__(
        self,
        spec: RunSpec,
        rank: int,
        metrics: MetricsWriter,
        sync: Callable[[], None] = lambda: None,
        timer: DeviceTimer | None = None,
    ):
        self.spec, self.rank, self.metrics, self.sync, self.timer = spec, rank, metrics, sync, timer
        self.accum, self.global_batch = spec.accum, spec.global_batch  # per epoch (batch schedules)
        self.discarding, self.discarded = False, 0
        self._times = dict.fromkeys(TIMED_PARTS, 0.0)
        self.backward_passes = 0  # facts a test checks (e.g. EXTRAP-SGD: 2 passes, 1 allreduce)
        self.allreduces = 0
        # seconds from the start of a step's gradient allreduce to its end, overlapped part
        # included; times["allreduce"] is only the exposed part (the wait after the backward)
        self.comm_total_s = 0.0
        # each host-timed "allreduce" block's seconds, in order: every rank runs the same blocks,
        # so their minimum over ranks is the part that is not waiting for the slowest rank
        # (lbbench/bench/core.py: slowest_rank_wait)
        self.waits: list[float] = []

    def start_epoch(self, epoch: int, global_batch: int, accum: int) -> None:
        self.global_batch, self.accum = global_batch, accum
        d = self.spec.discard
        self.discarding = d is not None and epoch <= d.epochs
        self.discarded = 0
        self.times = dict.fromkeys(self.times, 0.0)
        self.comm_total_s = 0.0
        self.waits = []

    def arm_overlap(self, keep_local: bool = False) -> None:
        """Before a step's last backward pass: start the gradient allreduce during it, where the
        backend can (PyTorch: lbbench/backends/torch/loop.py: OverlappedAllreduce);
        ``keep_local``: the step reads this rank's gradient after the backward pass."""

    @property
    def times(self) -> dict[str, float]:
        """Seconds per timed part; a device timer's pending intervals are added first."""
        if self.timer is not None:
            self.timer.flush(self._times)
        return self._times

    @times.setter
    def times(self, value: dict[str, float]) -> None:
        if self.timer is not None:
            self.timer.flush({k: 0.0 for k in value})  # intervals of before the reset are dropped
        self._times = value

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Adds the block's seconds to ``times[part]``. With a device timer (CUDA events on the
        current stream) the block is timed where its work runs, without stopping the host or
        the other streams (DALI's prefetch, NCCL); otherwise by the host clock after ``sync``
        (TensorFlow on a GPU: its devices synchronised, the only way TF offers)."""
        if self.timer is not None:
            start = self.timer.begin()
            yield
            self.timer.end(part, start)
            return
        t0 = time.perf_counter()
        yield
        self.sync()
        seconds = time.perf_counter() - t0
        self._times[part] += seconds
        if part == "allreduce":
            self.waits.append(seconds)

    def before_allreduce(self) -> None:
        faults.reach("allreduce", self.rank)

    def virtual_worker(self, a: int) -> int:
        """Micro-batch a of this rank is virtual worker k = rank x accum + a."""
        return self.rank * self.accum + a

    @property
    def virtual_workers(self) -> int:
        return self.spec.np * self.accum

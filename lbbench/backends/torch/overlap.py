"""The gradient allreduce overlapped with the backward pass (PyTorch).

On a step's last micro-batch every gradient is final as soon as autograd has accumulated it:
a post-accumulate-grad hook marks it ready, and when every gradient of a bucket is ready the
bucket's averaging allreduce starts (Horovod's asynchronous grouped allreduce) while the backward
pass goes on with the earlier layers - what Horovod's DistributedOptimizer, torch DDP and
NVIDIA's MLPerf code do. After the backward pass the buckets not started yet (a parameter
without a gradient is reduced as zeros, as the one grouped allreduce does) and the loss are
started, and every result is waited for and copied into ``.grad``.

Buckets are fixed before the first step - the parameters in reverse order (the order the
backward pass produces them), cut at ``bucket_bytes`` - and named by index, so every rank
starts the same tensors under the same names whatever order its hooks fire in.

The sums are elementwise, so at np = 2 the averaged gradients are bit-identical to one grouped
allreduce after the backward (tests/backends/torch/test_overlap.py); at np >= 3 a ring
allreduce adds an element's np parts in an order that depends on where the element sits in the
fused buffer, so the bucketing can change the last bits.
"""

from __future__ import annotations

import time
from typing import Any

import torch


class OverlappedAllreduce:
    def __init__(self, params: list[torch.Tensor], hvd: Any, average: dict[str, Any], bucket_bytes: int):
        self.params, self.hvd = params, hvd
        self.average = {k: v for k, v in average.items() if k != "compression"}
        self.buckets: list[list[torch.Tensor]] = [[]]
        size = 0
        for p in reversed(params):
            if size >= bucket_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self._bucket_of = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self._pending: list[int] = []
        self._handles: dict[int, Any] = {}
        self.armed = False
        self.first_start: float | None = None
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)

    def arm(self) -> None:
        """Before the step's last backward pass: start buckets as their gradients become final."""
        self.armed, self.first_start = True, None
        self._pending = [len(b) for b in self.buckets]
        self._handles = {}

    def _ready(self, p: torch.Tensor) -> None:
        if not self.armed:
            return
        i = self._bucket_of[id(p)]
        self._pending[i] -= 1
        if self._pending[i] == 0:
            self._start(i)

    def _start(self, i: int) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()
        for p in self.buckets[i]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.buckets[i]]
        self._handles[i] = self.hvd.grouped_allreduce_async(grads, name=f"lbbench.grad.{i}", **self.average)

    def finish(self, local_loss: torch.Tensor) -> float:
        """After the backward pass: start what is left, wait for everything, write the averages
        into .grad; returns the averaged loss."""
        self.armed = False
        for i in range(len(self.buckets)):
            if i not in self._handles:
                self._start(i)
        loss = self.hvd.allreduce_async(local_loss, name="lbbench.loss", **self.average)
        for i, handle in self._handles.items():
            for p, g in zip(self.buckets[i], self.hvd.synchronize(handle)):
                assert p.grad is not None
                p.grad.copy_(g)
        return float(self.hvd.synchronize(loss))

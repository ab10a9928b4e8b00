"""The pieces of one training step that every method composes: fetch a micro-batch,
forward/backward, the grouped allreduce. Each piece is timed (metrics.jsonl) and counted
(passes and allreduces per step are facts a test checks, e.g. EXTRAP-SGD: 2 and 1).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from lbbench.spec import RunSpec


class Loop:
    def __init__(self, spec: RunSpec, model: torch.nn.Module, params: list[torch.Tensor], train, hvd, rank: int):
        self.spec, self.model, self.params, self.train, self.hvd, self.rank = spec, model, params, train, hvd, rank
        self.times = dict(data=0.0, compute=0.0, allreduce=0.0, optimizer=0.0)
        self.backward_passes = 0
        self.allreduces = 0

    def reset_times(self) -> None:
        self.times = {k: 0.0 for k in self.times}

    def next_batch(self):
        t0 = time.perf_counter()
        batch = next(self.train)
        self.times["data"] += time.perf_counter() - t0
        return batch

    def forward_backward(self, x, y, scale: float) -> torch.Tensor:
        """Backpropagates scale x the micro-batch's mean loss into .grad (accumulating);
        returns the unscaled loss."""
        t0 = time.perf_counter()
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.spec.label_smoothing)
        (loss * scale).backward()
        self.backward_passes += 1
        self.times["compute"] += time.perf_counter() - t0
        return loss.detach()

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def allreduce_grads(self, local_loss: torch.Tensor) -> float:
        """Average .grad and the loss over ranks in one grouped allreduce; returns the loss."""
        t0 = time.perf_counter()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        reduced = self.hvd.grouped_allreduce(grads + [local_loss], op=self.hvd.Average)
        for p, g in zip(self.params, reduced):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
        self.allreduces += 1
        self.times["allreduce"] += time.perf_counter() - t0
        return float(reduced[-1])

    def virtual_worker(self, a: int) -> int:
        return self.rank * self.spec.accum + a

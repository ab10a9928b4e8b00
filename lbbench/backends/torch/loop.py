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
    def __init__(self, spec: RunSpec, model: torch.nn.Module, optimizer, train, hvd, rank: int, metrics,
                 device: torch.device | None = None, forward=None):
        from lbbench.backends.torch import perf
        from lbbench.backends.torch.diagnostics import Diagnostics
        self.spec, self.model, self.train, self.hvd, self.rank = spec, model, train, hvd, rank
        self.device = device or torch.device("cpu")
        self.forward = forward or model                # the torch.compile'd module when asked
        self.autocast = lambda: perf.autocast(spec.perf, self.device)
        self.scaler = perf.grad_scaler(spec.perf, self.device)
        self.compression = perf.compression(hvd, spec.perf)
        self.sync = perf.synchronizer(self.device)
        self._to_device = lambda b: perf.to_device(b, self.device, spec.perf)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.metrics = metrics
        self.diag = Diagnostics(model, optimizer, spec.diag_every) if spec.diag_every else None
        self.accum, self.global_batch = spec.accum, spec.global_batch   # per epoch (batch schedules)
        self.discarding, self.discarded = False, 0
        self.times = dict(data=0.0, compute=0.0, allreduce=0.0, optimizer=0.0)
        self.backward_passes = 0
        self.allreduces = 0

    def start_epoch(self, epoch: int, global_batch: int, accum: int) -> None:
        self.global_batch, self.accum = global_batch, accum
        d = self.spec.discard
        self.discarding = d is not None and epoch <= d.epochs
        self.discarded = 0
        self.times = {k: 0.0 for k in self.times}

    def next_batch(self):
        t0 = time.perf_counter()
        batch = self._to_device(next(self.train))
        self.sync()
        self.times["data"] += time.perf_counter() - t0
        return batch

    def forward_backward(self, x, y, scale: float) -> torch.Tensor:
        """Backpropagates scale x the micro-batch's mean loss into .grad (accumulating);
        returns the unscaled loss."""
        t0 = time.perf_counter()
        with self.autocast():
            logits = self.forward(x)
        per_sample = F.cross_entropy(logits.float(), y, label_smoothing=self.spec.label_smoothing, reduction="none")
        if self.discarding:
            keep = self._keep(per_sample.detach())
            self.discarded += int((~keep).sum())
            loss = (per_sample * keep).sum() / keep.sum()
        else:
            loss = per_sample.mean()
        scaled = loss * scale
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        self.backward_passes += 1
        self.sync()
        self.times["compute"] += time.perf_counter() - t0
        return per_sample.mean().detach()

    def _keep(self, losses: torch.Tensor) -> torch.Tensor:
        """Drop the fraction p of samples with the smallest loss: per micro-batch ('local', the
        same whatever np is) or over this accumulation slot's micro-batches of all ranks
        ('global', an allgather)."""
        d = self.spec.discard
        pool = self.hvd.allgather(losses) if d.scope == "global" else losses
        m = int(d.fraction * pool.numel())
        if m == 0:
            return torch.ones_like(losses, dtype=torch.bool)
        threshold = pool.kthvalue(m).values
        return losses > threshold

    def forward_loss(self, x, y) -> torch.Tensor:
        t0 = time.perf_counter()
        with self.autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.spec.label_smoothing)
        self.sync()
        self.times["compute"] += time.perf_counter() - t0
        return loss

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def allreduce_grads(self, local_loss: torch.Tensor) -> float:
        """Average .grad and the loss over ranks in one grouped allreduce; returns the loss."""
        t0 = time.perf_counter()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        reduced = self.hvd.grouped_allreduce(grads + [local_loss.to(grads[0].device)], op=self.hvd.Average,
                                             compression=self.compression)
        for p, g in zip(self.params, reduced):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
        self.allreduces += 1
        self.sync()
        self.times["allreduce"] += time.perf_counter() - t0
        return float(reduced[-1])

    def optimizer_step(self, optimizer) -> None:
        """optimizer.step(), through the fp16 loss scaler when there is one (it unscales the
        averaged gradients and skips the step on inf/NaN)."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def virtual_worker(self, a: int) -> int:
        return self.rank * self.accum + a

    @property
    def virtual_workers(self) -> int:
        return self.spec.np * self.accum

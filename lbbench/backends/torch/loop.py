"""The pieces of one training step that every strategy composes (PyTorch): fetch a
micro-batch, forward/backward, the grouped allreduce, the optimizer update. Each piece is
timed and counted through lbbench/worker/loop.py's LoopBase, which the TensorFlow Loop shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from lbbench.spec import RunSpec
from lbbench.store.metrics import MetricsWriter
from lbbench.worker.loop import LoopBase


class Loop(LoopBase):
    def __init__(
        self,
        spec: RunSpec,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train: Iterator[tuple[torch.Tensor, torch.Tensor]],
        hvd: Any,
        rank: int,
        metrics: MetricsWriter,
        device: torch.device | None = None,
        forward: Any = None,
    ):
        from lbbench.backends.torch import perf
        from lbbench.backends.torch.diagnostics import Diagnostics

        self.device = device or torch.device("cpu")
        super().__init__(spec, rank, metrics, sync=perf.synchronizer(self.device))
        self.model, self.train, self.hvd = model, train, hvd
        self.forward = forward or model  # the torch.compile'd module when asked
        self.autocast = lambda: perf.autocast(spec.perf, self.device)
        self.scaler = perf.grad_scaler(spec.perf, self.device)
        self.compression = perf.compression(hvd, spec.perf)
        self._to_device = lambda b: perf.to_device(b, self.device, spec.perf)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.diag = Diagnostics(model, optimizer, spec.diag_every) if spec.diag_every else None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        with self.timed("data"):
            batch = self._to_device(next(self.train))
        return batch

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
        """Backpropagates scale x the micro-batch's mean loss into .grad (accumulating);
        returns the unscaled loss."""
        with self.timed("compute"):
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
        return per_sample.mean().detach()

    def _keep(self, losses: torch.Tensor) -> torch.Tensor:
        """Drop the fraction p of samples with the smallest loss: per micro-batch ('local', the
        same whatever np is) or over this accumulation slot's micro-batches of all ranks
        ('global', an allgather)."""
        d = self.spec.discard
        assert d is not None
        pool = self.hvd.allgather(losses) if d.scope == "global" else losses
        m = int(d.fraction * pool.numel())
        if m == 0:
            return torch.ones_like(losses, dtype=torch.bool)
        threshold = pool.kthvalue(m).values
        return losses > threshold

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.timed("compute"):
            with self.autocast():
                logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.spec.label_smoothing)
        return loss

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def allreduce_grads(self, local_loss: torch.Tensor) -> float:
        """Average .grad and the loss over ranks in one grouped allreduce; returns the loss."""
        with self.timed("allreduce"):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            reduced = self.hvd.grouped_allreduce(
                grads + [local_loss.to(grads[0].device)], op=self.hvd.Average, compression=self.compression
            )
            for p, g in zip(self.params, reduced):
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.copy_(g)
            self.allreduces += 1
        return float(reduced[-1])

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), through the fp16 loss scaler when there is one (it unscales the
        averaged gradients and skips the step on inf/NaN)."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

"""The pieces of one training step that every strategy composes (PyTorch): fetch a
micro-batch, forward/backward, the grouped allreduce, the optimizer update. Each piece is
timed and counted through lbbench/worker/loop.py's LoopBase, which the TensorFlow Loop shares.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
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
        super().__init__(spec, rank, metrics, sync=perf.synchronizer(self.device), timer=perf.timer(self.device))
        self.model, self.train, self.hvd = model, train, hvd
        self.forward = forward or model  # the torch.compile'd module when asked
        self.dtype = perf.dtype(spec.perf)
        self.autocast = lambda: perf.autocast(spec.perf, self.device)
        self.scaler = perf.grad_scaler(spec.perf, self.device)
        self.average = perf.average_args(hvd, spec.perf)
        self._to_device = lambda b: perf.to_device(b, self.device, spec.perf)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.diag = Diagnostics(model, optimizer, spec.diag_every) if spec.diag_every else None
        self._queue: list[tuple[torch.Tensor, torch.Tensor]] = []  # a step's prefetched micro-batches
        self._threshold = torch.tensor(float("-inf"))
        self._kept_total = 0
        self.overlap = None
        if hvd.size() > 1 and spec.perf.overlap_allreduce and spec.perf.compression == "none":
            mb = spec.perf.fusion_threshold_mb or 25
            self.overlap = OverlappedAllreduce(model_order(self.params, model), hvd, self.average, mb * 2**20)

    def arm_overlap(self, keep_local: bool = False) -> None:
        if self.overlap is not None:
            self.overlap.arm(keep_local)

    def begin_step(self) -> None:
        """Before a step's micro-batches. With global small-loss discarding, the kept set is the
        global batch's samples above its loss quantile: this rank's micro-batches are fetched
        now, their per-sample losses computed once (BN statistics restored afterwards) and
        allgathered, and the threshold and the kept count are fixed for the whole step."""
        self._queue.clear()
        d = self.spec.discard
        if not (self.discarding and d is not None and d.scope == "global"):
            return
        with self.timed("data"):
            self._queue.extend(self._to_device(next(self.train)) for _ in range(self.accum))
        with self.timed("compute"), torch.no_grad(), frozen_bn_statistics(self.model):
            losses = torch.cat([self.per_sample(x, y) for x, y in self._queue])
        pool = wait(self.hvd, self.hvd.allgather_async(losses, name="lbbench.discard.losses"))
        m = int(d.fraction * pool.numel())
        self._threshold = pool.kthvalue(m).values if m else torch.tensor(float("-inf"), device=pool.device)
        self._kept_total = int((pool > self._threshold).sum())

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._queue:
            return self._queue.pop(0)
        with self.timed("data"):
            batch = self._to_device(next(self.train))
        return batch

    def per_sample(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cross entropy (label smoothing as the run's), in float32 at least whatever the AMP."""
        with self.autocast():
            logits = self.forward(x)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits, y, label_smoothing=self.spec.label_smoothing, reduction="none")

    def micro_loss(self, per_sample: torch.Tensor) -> torch.Tensor:
        """The micro-batch's training loss: the mean, or with small-loss discarding the mean over
        the kept samples - per virtual worker (scope 'rank': its own quantile) or of the global
        batch (scope 'global': K x this micro-batch's kept sum / the global kept count, so that
        the average over the K virtual workers is the global kept mean)."""
        d = self.spec.discard
        if not self.discarding or d is None:
            return per_sample.mean()
        losses = per_sample.detach()
        if d.scope == "global":
            keep = losses > self._threshold
            loss = (per_sample * keep).sum() * self.virtual_workers / self._kept_total
        else:
            m = int(d.fraction * losses.numel())
            keep = losses > losses.kthvalue(m).values if m else torch.ones_like(losses, dtype=torch.bool)
            loss = (per_sample * keep).sum() / keep.sum()
        self.discarded += int((~keep).sum())
        return loss

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
        """Backpropagates scale x the micro-batch's training loss into .grad (accumulating);
        returns the micro-batch's plain mean loss."""
        with self.timed("compute"):
            per_sample = self.per_sample(x, y)
            scaled = self.micro_loss(per_sample) * scale
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            self.backward_passes += 1
        return per_sample.mean().detach()

    def zero_grad(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def allreduce_grads(self, local_loss: torch.Tensor) -> float:
        """Average .grad and the loss over ranks in one grouped allreduce; returns the loss."""
        self.before_allreduce()
        if self.hvd.size() == 1:  # the average over one rank is the rank's own: no collective
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            return float(local_loss)
        if self.overlap is not None and self.overlap.armed:
            t0 = time.perf_counter()
            with self.timed("allreduce"):  # the exposed part: what the backward did not hide
                loss = self.overlap.finish(local_loss)
            self.comm_total_s += time.perf_counter() - (self.overlap.first_start or t0)
            self.allreduces += 1
            return loss
        t0 = time.perf_counter()
        with self.timed("allreduce"):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            reduced = grouped_allreduce(
                self.hvd, grads + [local_loss.to(grads[0].device)], "lbbench.grads", **self.average
            )
            for p, g in zip(self.params, reduced):
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.copy_(g)
            self.allreduces += 1
        self.comm_total_s += time.perf_counter() - t0
        return float(reduced[-1])

    def loss_scale(self) -> float:
        """The fp16 loss scale the gradients are multiplied by (1 without one)."""
        return float(self.scaler.get_scale()) if self.scaler else 1.0

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(), through the fp16 loss scaler when there is one (it unscales the
        averaged gradients and skips the step on inf/NaN)."""
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def wait(hvd: Any, handle: Any) -> Any:
    """``hvd.synchronize(handle)`` without its busy wait. Horovod's PyTorch binding waits by
    calling sched_yield in a loop, which keeps a core busy (in the kernel) for the whole
    allreduce; where ranks share the cores - a CPU node with a rank per core, or this project's
    2-core CI machine - that core is the one the other rank's compute or Horovod's own
    background thread needs. Polling with short sleeps (20 us, doubling to 100 us) gives it
    back, at the cost of at most ~0.1 ms after the result is ready."""
    pause = 2e-5
    while not hvd.poll(handle):
        time.sleep(pause)
        pause = min(2 * pause, 1e-4)
    return hvd.synchronize(handle)


def grouped_allreduce(hvd: Any, tensors: list[torch.Tensor], name: str, **kw: Any) -> list[torch.Tensor]:
    """``hvd.grouped_allreduce(tensors, **kw)`` (a ``compression`` included), waited for by
    ``wait``; a fixed ``name`` per call site lets Horovod's response cache recognise it."""
    compression = kw.pop("compression", hvd.Compression.none)
    compressed, ctxs = zip(*[compression.compress(t) for t in tensors])
    handle = hvd.grouped_allreduce_async(list(compressed), name=name, **kw)
    return [compression.decompress(t, c) for t, c in zip(wait(hvd, handle), ctxs)]


@contextmanager
def frozen_bn_statistics(model: torch.nn.Module) -> Iterator[None]:
    """Training-mode forwards inside leave the BN running statistics as they were."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    bufs = [b for m in bns for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.clone() for b in bufs]
    try:
        yield
    finally:
        for b, s in zip(bufs, saved):
            b.copy_(s)


def model_order(params: list[torch.Tensor], model: torch.nn.Module) -> list[torch.Tensor]:
    """``params`` in the order ``model`` registers them (its forward order: the backward pass
    finalises their gradients in about the reverse order); any the model does not hold first.
    The optimizer's order is not that: with BN and biases in a group of their own (LARS's skip
    list) every layer's biases came last, so the bucket holding them - the first one cut - could
    start only when conv1's gradient was ready, at the end of the backward pass."""
    position = {id(p): k for k, p in enumerate(model.parameters())}
    return sorted(params, key=lambda p: position.get(id(p), -1))


class OverlappedAllreduce:
    """The gradient allreduce overlapped with the backward pass (PyTorch).

    On a step's last micro-batch every gradient is final as soon as autograd has accumulated it:
    a post-accumulate-grad hook marks it ready, and when every gradient of a bucket is ready the
    bucket's averaging allreduce starts (Horovod's asynchronous grouped allreduce) while the backward
    pass goes on with the earlier layers - what Horovod's DistributedOptimizer, torch DDP and
    NVIDIA's MLPerf code do. After the backward pass the buckets not started yet (a parameter
    without a gradient is reduced as zeros, as the one grouped allreduce does) and the loss are
    started, and every result is waited for. The sums are written into ``.grad`` in place (no
    second buffer, no copy after the wait), except on a step whose diagnostics read the local
    gradient after the backward pass (``arm(keep_local=True)``): in place, Horovod's background
    thread would be overwriting it while they read it, so those steps reduce into new tensors and
    copy them into ``.grad`` after the wait.

    Buckets are fixed before the first step - ``params`` (given in the model's order, see
    ``model_order``) reversed, the order the backward pass produces them, cut at
    ``bucket_bytes`` - and named by index, so every rank starts the same tensors under the same
    names whatever order its hooks fire in.

    The sums are elementwise, so at np = 2 the averaged gradients are bit-identical to one grouped
    allreduce after the backward (tests/backends/torch/test_overlap.py); at np >= 3 a ring
    allreduce adds an element's np parts in an order that depends on where the element sits in the
    fused buffer, so the bucketing can change the last bits.
    """

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
        self.armed, self.in_place = False, True
        self.first_start: float | None = None
        for p in params:
            p.register_post_accumulate_grad_hook(self._ready)

    def arm(self, keep_local: bool = False) -> None:
        """Before the step's last backward pass: start buckets as their gradients become final;
        ``keep_local``: leave this rank's gradient in ``.grad`` until ``finish``."""
        self.armed, self.first_start, self.in_place = True, None, not keep_local
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
        start = self.hvd.grouped_allreduce_async_ if self.in_place else self.hvd.grouped_allreduce_async
        self._handles[i] = start(grads, name=f"lbbench.grad.{i}", **self.average)

    def finish(self, local_loss: torch.Tensor) -> float:
        """After the backward pass: start what is left and wait for everything (the averages are
        then in .grad); returns the averaged loss."""
        self.armed = False
        for i in range(len(self.buckets)):
            if i not in self._handles:
                self._start(i)
        loss = self.hvd.allreduce_async(local_loss, name="lbbench.loss", **self.average)
        for i, handle in self._handles.items():
            sums = wait(self.hvd, handle)
            if not self.in_place:
                for p, g in zip(self.buckets[i], sums):
                    assert p.grad is not None
                    p.grad.copy_(g)
        return float(wait(self.hvd, loss))

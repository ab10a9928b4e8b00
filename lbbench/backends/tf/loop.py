"""The pieces of one training step that every strategy composes (TensorFlow): the PyTorch
Loop's pieces (lbbench/backends/torch/loop.py) with explicit gradient lists instead of
``.grad``; timers and counters from lbbench/worker/loop.py's LoopBase, which both share.

One step = accum micro-batches per rank: the gradient of each (a ``tf.function``) is added up
locally with the method's weight / accum, then one grouped Horovod allreduce averages over
ranks. (horovod.tensorflow's DistributedGradientTape would allreduce every micro-batch's
gradient; lbbench's virtual-worker semantics need one allreduce of the accumulated average,
so the loop calls ``hvd.grouped_allreduce`` itself, as the PyTorch loop does.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from lbbench.backends.tf.optim import Optimizer
from lbbench.backends.tf.perf import average_args
from lbbench.spec import RunSpec
from lbbench.store.metrics import MetricsWriter
from lbbench.worker.loop import LoopBase


def per_sample_loss(logits, y, smoothing: float):
    """PyTorch's cross_entropy with label smoothing: (1-e) NLL + e mean_c(-log p_c)."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float64 if logits.dtype == tf.float64 else tf.float32))
    nll = -tf.gather(logp, y, axis=1, batch_dims=1)
    if not smoothing:
        return nll
    return (1 - smoothing) * nll - smoothing * tf.reduce_mean(logp, axis=1)


class Loop(LoopBase):
    def __init__(
        self,
        spec: RunSpec,
        model: Any,
        optimizer: Optimizer,
        train: Iterator[tuple[tf.Tensor, tf.Tensor]],
        hvd: Any,
        rank: int,
        metrics: MetricsWriter,
    ):
        from lbbench.backends.tf import perf

        super().__init__(spec, rank, metrics, sync=perf.synchronizer())
        self.model, self.opt, self.train, self.hvd = model, optimizer, train, hvd
        self.vars = model.trainable_variables
        self.dtype = self.vars[0].dtype  # float32, or float64 (run.perf.precision)
        self._grad = {mode: self._make_grad_fn(mode) for mode in ("none", "rank", "global")}
        self._concrete: dict[tuple, Any] = {}
        self._per_sample = tf.function(lambda x, y: per_sample_loss(model(x, training=True), y, spec.label_smoothing))
        self._queue: list[tuple[tf.Tensor, tf.Tensor]] = []  # a step's prefetched micro-batches
        self._threshold = tf.constant(float("-inf"))
        self._kept_total = 1.0

    def _discard_mode(self) -> str:
        d = self.spec.discard
        return d.scope if self.discarding and d is not None else "none"

    def _discard_fraction(self) -> float:
        assert self.spec.discard is not None  # only asked while discarding
        return self.spec.discard.fraction

    def _make_grad_fn(self, mode: str):
        model, spec = self.model, self.spec

        # run.perf.compile: XLA for the forward/backward (PyTorch: torch.compile)
        @tf.function(reduce_retracing=True, jit_compile=spec.perf.compile or None)
        def grad(x, y, scale, threshold, kept_total):
            with tf.GradientTape() as tape:
                per = per_sample_loss(model(x, training=True), y, spec.label_smoothing)
                loss, dropped = self._reduce(per, mode, threshold, kept_total)
                scaled = loss * scale
            return tf.reduce_mean(per), tape.gradient(scaled, self.vars), dropped

        return grad

    def _reduce(self, per, mode: str, threshold, kept_total):
        """The micro-batch's training loss from its per-sample losses (the PyTorch Loop's
        micro_loss): the mean; the mean over the samples above the micro-batch's own quantile
        (discard scope 'rank'); or K x its sum above the global batch's quantile / the global kept
        count (scope 'global'). Returns (loss, samples dropped)."""
        if mode == "none":
            return tf.reduce_mean(per), tf.constant(0)
        losses = tf.stop_gradient(per)
        if mode == "rank":
            m = int(self._discard_fraction() * int(per.shape[0]))
            threshold = tf.sort(losses)[m - 1] if m else tf.constant(float("-inf"), per.dtype)
        keep = tf.cast(losses > tf.cast(threshold, per.dtype), per.dtype)
        kept = tf.reduce_sum(keep)
        denom = kept if mode == "rank" else tf.cast(kept_total, per.dtype) / self.virtual_workers
        return tf.reduce_sum(per * keep) / denom, tf.reduce_sum(1 - tf.cast(keep, tf.int32))

    def micro_loss(self, per):
        """The training loss of a micro-batch's per-sample losses, outside the compiled step
        (CBLR's refresh and K-FAC's factor passes use it), counting the dropped samples."""
        loss, dropped = self._reduce(per, self._discard_mode(), self._threshold, self._kept_total)
        self.discarded += int(dropped)
        return loss

    def begin_step(self) -> None:
        """Before a step's micro-batches: with global discarding, fetch this rank's micro-batches,
        compute their per-sample losses once (BN statistics restored afterwards), allgather them
        (eagerly: the gathered size is known here) and fix the step's threshold and kept count."""
        self._queue.clear()
        if self._discard_mode() != "global":
            return
        with self.timed("data"):
            self._queue.extend((tf.cast(x, self.dtype), y) for x, y in (next(self.train) for _ in range(self.accum)))
        with self.timed("compute"):
            stats = [v for v in self.model.non_trainable_variables if "moving_" in v.name]
            saved = [tf.identity(v) for v in stats]
            losses = tf.concat([self._per_sample(x, y) for x, y in self._queue], 0)
            for v, s in zip(stats, saved):
                v.assign(s)
        pool = self.hvd.allgather(losses).numpy()
        m = int(self._discard_fraction() * pool.size)
        threshold = float(sorted(pool)[m - 1]) if m else float("-inf")
        self._threshold = tf.constant(threshold, losses.dtype)
        self._kept_total = float((pool > threshold).sum())

    def next_batch(self):
        if self._queue:
            return self._queue.pop(0)
        with self.timed("data"):
            x, y = next(self.train)
        return tf.cast(x, self.dtype), y

    def forward_backward(self, x, y, scale: float):
        """(the micro-batch's mean loss, the gradient of scale x its loss)."""
        with self.timed("compute"):
            args = (x, y, tf.constant(scale, self.dtype), self._threshold, tf.constant(self._kept_total))
            mode = self._discard_mode()
            key = (mode, *((tuple(a.shape), a.dtype) for a in args))
            fn = self._concrete.get(key)
            if fn is None:  # called directly, a concrete function skips the signature matching per call
                fn = self._concrete[key] = self._grad[mode].get_concrete_function(
                    *(tf.TensorSpec.from_tensor(a) for a in args)
                )
            loss, grads, dropped = fn(*args)
            self.discarded += int(dropped)
            self.backward_passes += 1
        return loss, list(grads)

    def allreduce(self, grads: list, local_loss) -> tuple[list, float]:
        """Average the gradients and the loss over ranks in one grouped allreduce."""
        self.before_allreduce()
        if self.hvd.size() == 1:  # the average over one rank is the rank's own: no collective
            return list(grads), float(local_loss)
        t0 = time.perf_counter()
        with self.timed("allreduce"):  # all of it exposed: the tape hands over the gradients at once
            reduced = self.hvd.grouped_allreduce(
                list(grads) + [tf.reshape(local_loss, [])], **average_args(self.hvd, self.spec.perf)
            )
            self.allreduces += 1
            loss = float(reduced[-1])
        self.comm_total_s += time.perf_counter() - t0
        return list(reduced[:-1]), loss

    def update(self, grads: list) -> None:
        with self.timed("optimizer"):
            self.opt.step(grads)

    def diag_active(self, step: int) -> bool:
        return bool(self.spec.diag_every) and step % self.spec.diag_every == 0

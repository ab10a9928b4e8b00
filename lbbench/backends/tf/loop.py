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

from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from lbbench.backends.tf.optim import Optimizer
from lbbench.spec import RunSpec
from lbbench.store.metrics import MetricsWriter
from lbbench.worker.loop import LoopBase


def per_sample_loss(logits, y, smoothing: float):
    """PyTorch's cross_entropy with label smoothing: (1-e) NLL + e mean_c(-log p_c)."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32))
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
        super().__init__(spec, rank, metrics)  # eager TF ops have finished when they return: no sync
        self.model, self.opt, self.train, self.hvd = model, optimizer, train, hvd
        self.vars = model.trainable_variables
        self._grad = {d: self._make_grad_fn(d) for d in (False, True)}
        self._loss = tf.function(
            lambda x, y: tf.reduce_mean(per_sample_loss(model(x, training=True), y, spec.label_smoothing))
        )

    def _make_grad_fn(self, discarding: bool):
        model, spec = self.model, self.spec

        # run.perf.compile: XLA for the forward/backward (PyTorch: torch.compile)
        @tf.function(reduce_retracing=True, jit_compile=spec.perf.compile or None)
        def grad(x, y, scale):
            with tf.GradientTape() as tape:
                per = per_sample_loss(model(x, training=True), y, spec.label_smoothing)
                if discarding:
                    keep = self._keep(tf.stop_gradient(per))
                    keepf = tf.cast(keep, per.dtype)
                    loss = tf.reduce_sum(per * keepf) / tf.reduce_sum(keepf)
                    dropped = tf.reduce_sum(1 - tf.cast(keep, tf.int32))
                else:
                    loss, dropped = tf.reduce_mean(per), tf.constant(0)
                scaled = loss * scale
            return tf.reduce_mean(per), tape.gradient(scaled, self.vars), dropped

        return grad

    def _keep(self, losses):
        """Drop the fraction p of samples with the smallest loss (see the PyTorch loop)."""
        d = self.spec.discard
        pool = self.hvd.allgather(losses) if d.scope == "global" else losses
        m = int(d.fraction * int(pool.shape[0]))
        if m == 0:
            return tf.ones_like(losses, dtype=tf.bool)
        threshold = tf.sort(pool)[m - 1]
        return losses > threshold

    def next_batch(self):
        with self.timed("data"):
            batch = next(self.train)
        return batch

    def forward_backward(self, x, y, scale: float):
        """(the micro-batch's mean loss, the gradient of scale x its loss)."""
        with self.timed("compute"):
            loss, grads, dropped = self._grad[self.discarding](x, y, tf.constant(scale, tf.float32))
            self.discarded += int(dropped)
            self.backward_passes += 1
        return loss, list(grads)

    def forward_loss(self, x, y):
        with self.timed("compute"):
            loss = self._loss(x, y)
        return loss

    def allreduce(self, grads: list, local_loss) -> tuple[list, float]:
        """Average the gradients and the loss over ranks in one grouped allreduce."""
        with self.timed("allreduce"):
            compression = (
                self.hvd.Compression.fp16 if self.spec.perf.compression == "fp16" else self.hvd.Compression.none
            )
            reduced = self.hvd.grouped_allreduce(
                list(grads) + [tf.reshape(local_loss, [])], op=self.hvd.Average, compression=compression
            )
            self.allreduces += 1
            loss = float(reduced[-1])
        return list(reduced[:-1]), loss

    def update(self, grads: list) -> None:
        with self.timed("optimizer"):
            self.opt.step(grads)

    def diag_active(self, step: int) -> bool:
        return bool(self.spec.diag_every) and step % self.spec.diag_every == 0

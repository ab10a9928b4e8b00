"""K-FAC / SP-NGD preconditioner for the TensorFlow backend: the PyTorch backend's preconditioner
(lbbench/backends/torch/kfac.py; formula and [lbbench] choices in lbbench/methods/kfac.py)
on Keras layers.

Factors come from the step's own forward/backward: on factor steps the micro-batch runs eagerly
with every Conv2D/Dense (and BN) layer's input and output recorded, and one tape gives the
weight gradients and the gradients w.r.t. those outputs. Conv rows are im2col patches in
Keras' (kh, kw, cin) order, and the gradient matrices use the same order: the preconditioned
gradient is the PyTorch one up to that permutation, hence the same update.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf
import tf_keras as keras

from lbbench.backends.tf.loop import per_sample_loss
from lbbench.backends.tf.model import SpanBatchNorm
from lbbench.methods.kfac import assign_owners, damping_split, kl_clip_scale


def damped_inverses(A, G, damping: float, weight_decay: float):
    """(A + pi sqrt(r) I)^-1 and (G + sqrt(r)/pi I)^-1 (lbbench/methods/kfac.py: damping_split)."""
    da, dg = damping_split(
        float(tf.linalg.trace(A)), A.shape[0], float(tf.linalg.trace(G)), G.shape[0], damping, weight_decay
    )

    def inv(M, d):
        eye = tf.eye(M.shape[0], dtype=M.dtype)
        try:
            return tf.linalg.cholesky_solve(tf.linalg.cholesky(M + d * eye), eye)
        except tf.errors.InvalidArgumentError:  # not positive definite: NaN, as in the PyTorch backend
            return tf.fill(tf.shape(M), tf.constant(float("nan"), M.dtype))

    return inv(A, da), inv(G, dg)


class KFACPreconditioner:
    def __init__(self, model, hp: dict, rank: int, size: int):
        self.hp, self.rank, self.size = hp, rank, size
        self.layers = [m for m in model.ordered if not isinstance(m, SpanBatchNorm)]
        self.bns = [m for m in model.ordered if isinstance(m, SpanBatchNorm)] if hp["bn_fisher"] == "unit_wise" else []
        self.var_index = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
        self.captured: list | None = None
        self.acc: dict = {}
        self.A: dict[int, tf.Tensor] = {}
        self.G: dict[int, tf.Tensor] = {}
        self.F: dict[int, tf.Tensor] = {}
        self.inv: dict[int, tuple] = {}
        for layer in self.layers + self.bns:
            layer.call = self._recording(layer, layer.call)
        self.owner = assign_owners([float(_rows_dim(m) ** 3 + m.kernel.shape[-1] ** 3) for m in self.layers], size)

    def _recording(self, layer, call):
        @functools.wraps(call)
        def wrapped(inputs, *args, **kwargs):
            out = call(inputs, *args, **kwargs)
            if self.captured is not None:
                self.captured.append((layer, inputs, out))
            return out

        return wrapped

    def _idx(self, var) -> int:
        return self.var_index[var.ref()]

    # -- statistics ------------------------------------------------------------------------
    def micro_stats(self, model, x, y, scale: float, smoothing: float, micro_loss):
        """Forward/backward of one micro-batch (eager) that also accumulates its factors;
        returns (mean loss, the gradient of scale x the training loss, which ``micro_loss`` - the
        loop's - makes from the per-sample losses, with small-loss discarding when it is on)."""
        variables = model.trainable_variables
        self.captured = []
        with tf.GradientTape() as tape:
            per = per_sample_loss(model(x, training=True), y, smoothing)
            scaled = micro_loss(per) * scale
        caps, self.captured = self.captured, None
        grads = tape.gradient(scaled, list(variables) + [o for _, _, o in caps])
        n = int(x.shape[0])
        for (layer, a, _), d in zip(caps, grads[len(variables) :]):
            # float32 at least (the PyTorch preconditioner says why); float64 runs stay float64
            dtype = tf.float64 if a.dtype == tf.float64 else tf.float32
            a, d = tf.cast(a, dtype), tf.cast(d, dtype) / scale
            if isinstance(layer, SpanBatchNorm):
                stat: tuple[Any, ...] = (_bn_unit_fisher(layer, a, d * n),)
            else:
                # A: patches summed over output locations, averaged over samples; G: averaged over both
                rows, drows = input_rows(layer, a), tf.reshape(d, [-1, d.shape[-1]]) * n
                stat = (
                    tf.matmul(rows, rows, transpose_a=True) / n,
                    tf.matmul(drows, drows, transpose_a=True) / tf.cast(tf.shape(drows)[0], dtype),
                )
            key = (
                isinstance(layer, SpanBatchNorm),
                (self.bns if isinstance(layer, SpanBatchNorm) else self.layers).index(layer),
            )
            prev = self.acc.get(key)
            self.acc[key] = [s + p for s, p in zip(stat, prev)] + [prev[-1] + 1] if prev else list(stat) + [1]
        return tf.reduce_mean(per), list(grads[: len(variables)])

    def reduce(self, hvd) -> None:
        keys = sorted(self.acc)
        local = [s / self.acc[k][-1] for k in keys for s in self.acc[k][:-1]]
        averaged = iter(hvd.grouped_allreduce(local, op=hvd.Average) if self.size > 1 else local)
        w = self.hp["stat_decay"]
        for is_bn, i in keys:
            for store in (self.F,) if is_bn else (self.A, self.G):
                new = next(averaged)
                store[i] = new if i not in store or w >= 1 else (1 - w) * store[i] + w * new
        self.acc = {}

    def invert(self) -> None:
        for i in range(len(self.layers)):
            if self.owner[i] == self.rank and i in self.A:
                self.inv[i] = damped_inverses(self.A[i], self.G[i], self.hp["damping"], self.hp["weight_decay"])

    # -- preconditioning -------------------------------------------------------------------
    def precondition(self, grads: list, hvd, lr: float) -> list:
        wd, grads = self.hp["weight_decay"], list(grads)
        out, raw = [], []
        for i, m in enumerate(self.layers):
            g = self._grad_matrix(m, grads, wd)
            raw.append(g)
            if self.owner[i] == self.rank:
                Ainv, Ginv = self.inv[i]
                out.append(Ginv @ g @ Ainv)
            else:
                out.append(tf.zeros_like(g))
        if self.size > 1:
            out = hvd.grouped_allreduce(out, op=hvd.Sum)
        nu = 1.0
        if self.hp["kl_clip"] > 0:
            nu = kl_clip_scale(sum(float(tf.reduce_sum(p * g)) for p, g in zip(out, raw)) * lr * lr, self.hp["kl_clip"])
        for m, p in zip(self.layers, out):
            p = p * nu
            if getattr(m, "bias", None) is not None:
                grads[self._idx(m.bias)] = p[:, -1]
                p = p[:, :-1]
            k = m.kernel
            grads[self._idx(k)] = tf.reshape(tf.transpose(p), k.shape)
        for i, m in enumerate(self.bns):
            if i in self.F:
                Fm = self.F[i] + self.hp["bn_damping_scale"] * max(wd, self.hp["damping"]) * tf.eye(
                    2, dtype=self.F[i].dtype
                )
                g = tf.stack([grads[self._idx(m.gamma)], grads[self._idx(m.beta)]], axis=1)[..., None]
                try:
                    x = tf.linalg.solve(Fm, g)
                except tf.errors.InvalidArgumentError:  # singular: NaN, as in the PyTorch backend
                    x = tf.fill(tf.shape(g), tf.constant(float("nan"), g.dtype))
                p = tf.squeeze(x, -1) * nu
                grads[self._idx(m.gamma)], grads[self._idx(m.beta)] = p[:, 0], p[:, 1]
        return grads

    def _grad_matrix(self, m, grads, extra_wd: float):
        k = m.kernel
        g = tf.transpose(tf.reshape(grads[self._idx(k)] + extra_wd * k, [-1, k.shape[-1]]))
        if getattr(m, "bias", None) is not None:
            g = tf.concat([g, tf.reshape(grads[self._idx(m.bias)], [-1, 1])], axis=1)
        return g

    def full_state(self, hvd) -> dict:
        out = {
            name: {i: v.numpy() for i, v in store.items()}
            for name, store in (("A", self.A), ("G", self.G), ("F", self.F))
        }
        out["inv"] = {i: tuple(t.numpy() for t in v) for i, v in self.inv.items()}
        if self.size > 1:
            for part in hvd.allgather_object(out["inv"]):
                out["inv"].update(part)
        return out

    def load_full_state(self, state: dict) -> None:
        for name, store in (("A", self.A), ("G", self.G), ("F", self.F)):
            store.clear()
            store.update({i: tf.constant(v) for i, v in state[name].items()})
        self.inv = {i: tuple(tf.constant(t) for t in v) for i, v in state["inv"].items()}


def input_rows(layer, a):
    """Rows whose outer products make A: Dense inputs, or the conv's im2col patches (its input
    is already padded); + 1 for a bias."""
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        s = layer.strides[0]
        patches = tf.image.extract_patches(a, [1, kh, kw, 1], [1, s, s, 1], [1, 1, 1, 1], "VALID")
        a = tf.reshape(patches, [-1, patches.shape[-1]])
    if getattr(layer, "bias", None) is not None:
        a = tf.concat([a, tf.ones([tf.shape(a)[0], 1], a.dtype)], axis=1)
    return a


def _bn_unit_fisher(layer: SpanBatchNorm, x, dy):
    n = int(x.shape[0])
    span = layer.span or n
    xs = tf.reshape(x, [n // span, span, *x.shape[1:]])
    mean = tf.reduce_mean(xs, axis=[1, 2, 3], keepdims=True)
    var = tf.reduce_mean(tf.square(xs - mean), axis=[1, 2, 3], keepdims=True)
    xhat = tf.reshape((xs - mean) * tf.math.rsqrt(var + layer.eps), x.shape)
    v = tf.stack([tf.reduce_sum(dy * xhat, axis=[1, 2]), tf.reduce_sum(dy, axis=[1, 2])], axis=2)  # (N, C, 2)
    return tf.einsum("nci,ncj->cij", v, v) / n


def _rows_dim(m) -> int:
    """The side of A: kh kw cin (Conv2D) or the inputs (Dense), + 1 for a bias."""
    kshape = m.kernel.shape
    d = kshape[0] * kshape[1] * kshape[2] if len(kshape) == 4 else kshape[0]
    return d + (1 if getattr(m, "bias", None) is not None else 0)


def rescale_weights(layers: list) -> None:
    """chainerkfac's weight rescaling (lbbench/backends/torch/kfac.py says what and why)."""
    for m in layers:
        k = m.kernel
        target = (2.0 * k.shape[-1]) ** 0.5
        k.assign(k * tf.minimum(target / (tf.norm(tf.reshape(k, [-1])) + 1e-9), 1.0))

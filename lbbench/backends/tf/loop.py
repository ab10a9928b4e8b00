"""The TensorFlow training step: the PyTorch backend's pieces (lbbench/backends/torch/loop.py
and optim/methods.py) with explicit gradient lists instead of ``.grad``.

One step = accum micro-batches per rank: the gradient of each (a ``tf.function``) is added up
locally with the method's weight / accum, then one grouped Horovod allreduce averages over
ranks. (horovod.tensorflow's DistributedGradientTape would allreduce every micro-batch's
gradient; lbbench's virtual-worker semantics need one allreduce of the accumulated average,
so the loop calls ``hvd.grouped_allreduce`` itself, as the PyTorch loop does.)
"""
from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from lbbench.backends.tf.model import from_torch_layout, torch_layout
from lbbench.backends.tf.optim import Optimizer
from lbbench.methods.cblr import rademacher
from lbbench.spec import RunSpec


def per_sample_loss(logits, y, smoothing: float):
    """PyTorch's cross_entropy with label smoothing: (1-e) NLL + e mean_c(-log p_c)."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32))
    nll = -tf.gather(logp, y, axis=1, batch_dims=1)
    if not smoothing:
        return nll
    return (1 - smoothing) * nll - smoothing * tf.reduce_mean(logp, axis=1)


class Loop:
    def __init__(self, spec: RunSpec, model, optimizer: Optimizer, train, hvd, rank: int, metrics):
        self.spec, self.model, self.opt, self.train, self.hvd, self.rank = spec, model, optimizer, train, hvd, rank
        self.vars = model.trainable_variables
        self.metrics = metrics
        self.accum, self.global_batch = spec.accum, spec.global_batch
        self.discarding, self.discarded = False, 0
        self.times = dict(data=0.0, compute=0.0, allreduce=0.0, optimizer=0.0)
        self.backward_passes = 0
        self.allreduces = 0
        self._grad = {d: self._make_grad_fn(d) for d in (False, True)}
        self._loss = tf.function(lambda x, y: tf.reduce_mean(
            per_sample_loss(model(x, training=True), y, spec.label_smoothing)))

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

    def start_epoch(self, epoch: int, global_batch: int, accum: int) -> None:
        self.global_batch, self.accum = global_batch, accum
        d = self.spec.discard
        self.discarding = d is not None and epoch <= d.epochs
        self.discarded = 0
        self.times = {k: 0.0 for k in self.times}

    def sync(self) -> None:
        """Timing barrier; TensorFlow's eager ops have finished when they return here."""

    def next_batch(self):
        t0 = time.perf_counter()
        batch = next(self.train)
        self.times["data"] += time.perf_counter() - t0
        return batch

    def forward_backward(self, x, y, scale: float):
        """(the micro-batch's mean loss, the gradient of scale x its loss)."""
        t0 = time.perf_counter()
        loss, grads, dropped = self._grad[self.discarding](x, y, tf.constant(scale, tf.float32))
        self.discarded += int(dropped)
        self.backward_passes += 1
        self.times["compute"] += time.perf_counter() - t0
        return loss, list(grads)

    def forward_loss(self, x, y):
        t0 = time.perf_counter()
        loss = self._loss(x, y)
        self.times["compute"] += time.perf_counter() - t0
        return loss

    def allreduce(self, grads: list, local_loss) -> tuple[list, float]:
        """Average the gradients and the loss over ranks in one grouped allreduce."""
        t0 = time.perf_counter()
        compression = self.hvd.Compression.fp16 if self.spec.perf.compression == "fp16" else self.hvd.Compression.none
        reduced = self.hvd.grouped_allreduce(list(grads) + [tf.reshape(local_loss, [])], op=self.hvd.Average,
                                             compression=compression)
        self.allreduces += 1
        loss = float(reduced[-1])
        self.times["allreduce"] += time.perf_counter() - t0
        return list(reduced[:-1]), loss

    def update(self, grads: list) -> None:
        t0 = time.perf_counter()
        self.opt.step(grads)
        self.times["optimizer"] += time.perf_counter() - t0

    def diag_active(self, step: int) -> bool:
        return bool(self.spec.diag_every) and step % self.spec.diag_every == 0

    def write_diag(self, step: int, loss: float, grads: list, before: list, micro_sq: list[float]) -> None:
        """Per-tensor norms and the gradient-noise-scale parts (the PyTorch Diagnostics' row)."""
        from lbbench.noise_scale import noise_scale_parts
        tensors = []
        for v, g, w0, st in zip(self.vars, grads, before, self.opt.state):
            dw = v - w0
            trust = st.get("trust_ratio")
            tensors.append(dict(name=v.name, w_norm=float(tf.norm(w0)), g_norm=float(tf.norm(g)),
                                update_norm=float(tf.norm(dw)), mean_abs_g=float(tf.reduce_mean(tf.abs(g))),
                                mean_abs_dw=float(tf.reduce_mean(tf.abs(dw))),
                                trust_ratio=None if trust is None else float(trust)))
        global_sq = sum(float(tf.reduce_sum(tf.square(g))) for g in grads)
        micro = float(self.hvd.allreduce(tf.constant(sum(micro_sq) / max(len(micro_sq), 1), tf.float64),
                                         op=self.hvd.Average))
        parts = noise_scale_parts(micro, global_sq, self.spec.local_batch, self.global_batch)
        self.metrics.write("diag", step=step, loss=loss, tensors=tensors, micro_grad_sq=micro, global_grad_sq=global_sq,
                           noise_g2=parts[0] if parts else None, noise_trace=parts[1] if parts else None)

    def virtual_worker(self, a: int) -> int:
        return self.rank * self.accum + a

    @property
    def virtual_workers(self) -> int:
        return self.spec.np * self.accum


class Standard:
    """Average the K micro-batch gradients, hand them to the optimizer."""

    def __init__(self, spec: RunSpec, model, method: str | None = None, hparams: dict | None = None):
        self.spec = spec
        self.optimizer = Optimizer(method or spec.method, hparams or spec.hparams, model.trainable_variables,
                                   spec.lr.peak_lr)

    def weight(self, step: int, epoch: int, k: int, K: int) -> float:
        return 1.0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum = loop.accum
        acc, local = None, tf.constant(0.0)
        micro = [] if loop.diag_active(step) else None
        for a in range(accum):
            x, y = loop.next_batch()
            w = self.weight(step, epoch, loop.virtual_worker(a), loop.virtual_workers) / accum
            loss, g = loop.forward_backward(x, y, w)
            if micro is not None:
                micro.append(sum(float(tf.reduce_sum(tf.square(gi * accum))) for gi in g))
            acc = g if acc is None else [s + gi for s, gi in zip(acc, g)]
            local += loss / accum
        grads, loss = loop.allreduce(acc, local)
        if math.isfinite(loss):
            before = [tf.identity(v) for v in loop.vars] if micro is not None else None
            loop.update(grads)
            if micro is not None:
                loop.write_diag(step, loss, grads, before, micro)
        return loss


class GradientMix(Standard):
    """Micro-batch k's loss weighted by K c_k, c ~ Dirichlet(alpha) shared by all ranks
    (lbbench/methods/gradientmix.py)."""

    def __init__(self, spec: RunSpec, model):
        super().__init__(spec, model, spec.hparams["base"], spec.hparams["base_hparams"])

    def weight(self, step: int, epoch: int, k: int, K: int) -> float:
        from lbbench.methods.gradientmix import loss_weight
        return loss_weight(self.spec.hparams, self.spec.seed, step, epoch, k, K)


class ExtrapSGD(Standard):
    """METHODS.md section 5 (lbbench/methods/extrap_sgd.py). BN running statistics change only
    in the second pass: the first pass's updates are undone (= momentum 0 for that pass)."""

    def __init__(self, spec: RunSpec, model):
        hp = spec.hparams
        sgd_hp = dict(momentum=hp["momentum"], nesterov=True, weight_decay=hp["weight_decay"],
                      exclude_bn_bias=hp["exclude_bn_bias"], lr_convention="outside")
        super().__init__(spec, model, "sgd", sgd_hp)
        self.hp, self.model = hp, model
        self.bn_stats = [v for v in model.non_trainable_variables if "moving_" in v.name]
        self.noise = np.random.default_rng(spec.seed * 7 + 1)

    def state_dict(self) -> dict:
        return {"noise_rng": self.noise.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.noise.bit_generator.state = state["noise_rng"]

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum, hp, vars_ = loop.accum, self.hp, loop.vars
        gx = hp["extrap_scale"] * self.optimizer.lr
        saved = [tf.identity(v) for v in vars_]
        h_sum, local = [tf.zeros_like(v) for v in vars_], tf.constant(0.0)
        for a in range(accum):
            x, y = loop.next_batch()
            if hp["perturbation"] == "extragradient":
                stats = [tf.identity(s) for s in self.bn_stats]
                _, g = loop.forward_backward(x, y, 1.0)
                for s, s0 in zip(self.bn_stats, stats):
                    s.assign(s0)
                for v, gi, st in zip(vars_, g, self.optimizer.state):
                    buf = st.get("momentum_buffer")
                    v.assign_sub(gx * (gi if buf is None else gi + hp["momentum"] * buf))
            else:
                for v in vars_:
                    v.assign_add(self._noise(v))
            loss, h = loop.forward_backward(x, y, 1.0)
            local += loss / accum
            h_sum = [s + hi / accum for s, hi in zip(h_sum, h)]
            for v, w in zip(vars_, saved):
                v.assign(w)                  # every micro-batch extrapolates from the same w
        grads, loss = loop.allreduce(h_sum, local)
        if math.isfinite(loss):
            loop.update(grads)
        return loss

    def _noise(self, v):
        """Drawn in PyTorch's layout and transposed: the PyTorch backend's noise, weight by weight."""
        s, shape = self.hp["noise_scale"], torch_layout(v.shape)
        if self.hp["perturbation"] == "gaussian":
            z = self.noise.standard_normal(shape).astype(np.float32) * s
        else:
            z = (self.noise.random(shape).astype(np.float32) * 2 - 1) * s
        return tf.constant(from_torch_layout(z))


class CurvatureLR(Standard):
    """CBLR: on refresh steps, Hutchinson probes of the Hessian diagonal per micro-batch, seeded
    by (seed, step, virtual worker): the PyTorch backend's probes, drawn the same way."""

    def __init__(self, spec: RunSpec, model):
        super().__init__(spec, model)
        self.every, self.samples = spec.hparams["curvature_every"], spec.hparams["hutchinson_samples"]
        self.model = model

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        if (step - 1) % self.every:
            return super().step(loop, step, epoch)
        accum, vars_ = loop.accum, loop.vars
        acc = [tf.zeros_like(v) for v in vars_]
        diag = [tf.zeros_like(v) for v in vars_]
        local = tf.constant(0.0)
        for a in range(accum):
            x, y = loop.next_batch()
            t0 = time.perf_counter()
            rng = np.random.default_rng([self.spec.seed, step, loop.virtual_worker(a)])
            # drawn in the PyTorch layout (OIHW, (out, in)) and transposed: the same probe per weight
            zs = [[tf.constant(from_torch_layout(z)) for z in rademacher(rng, [torch_layout(v.shape) for v in vars_])]
                  for _ in range(self.samples)]
            loss, g, hz = self._grad_and_hvp(x, y, zs)
            acc = [s + gi / accum for s, gi in zip(acc, g)]
            for z_list, h_list in zip(zs, hz):
                diag = [d + z * h / (self.samples * accum) for d, z, h in zip(diag, z_list, h_list)]
            loop.backward_passes += 1 + self.samples
            loop.times["compute"] += time.perf_counter() - t0
            local += loss / accum
        self.optimizer.set_curvature(loop.hvd.grouped_allreduce(diag, op=loop.hvd.Average))
        grads, loss = loop.allreduce(acc, local)
        if math.isfinite(loss):
            loop.update(grads)
        return loss

    def _grad_and_hvp(self, x, y, zs):
        vars_, smoothing = self.model.trainable_variables, self.spec.label_smoothing
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_mean(per_sample_loss(self.model(x, training=True), y, smoothing))
            g = inner.gradient(loss, vars_)
        hz = [outer.gradient(g, vars_, output_gradients=z) for z in zs]
        del outer
        return loss, g, hz


def build_method(spec: RunSpec, model, rank: int = 0, size: int = 1):
    if spec.method == "kfac":
        from lbbench.backends.tf.kfac import KFAC
        return KFAC(spec, model, rank, size)
    return {"cblr": CurvatureLR, "gradientmix": GradientMix, "extrap_sgd": ExtrapSGD}.get(spec.method, Standard)(spec, model)

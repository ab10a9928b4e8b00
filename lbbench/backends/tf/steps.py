"""Training-step strategies (TensorFlow), one per step kind of the registry, in one table
``STEPS`` - the PyTorch backend's table (lbbench/backends/torch/steps.py), strategy for
strategy:

  standard   accumulate the micro-batch gradients (each loss weighted by the method's
             ``loss_weight`` - GradientMix - or 1), one allreduce, the update rule
  extrap     EXTRAP-SGD's two passes per micro-batch, one allreduce
  curvature  CBLR: on refresh steps the Hessian diagonal by Hutchinson probes
  kfac       K-FAC / SP-NGD: factors from the step's own passes, preconditioned gradients
"""

from __future__ import annotations

import math
import time
from typing import Any

import tensorflow as tf

from lbbench.backends.tf.diagnostics import squared_norm, write_diag
from lbbench.backends.tf.loop import Loop, per_sample_loss
from lbbench.backends.tf.model import from_torch_layout, torch_layout
from lbbench.backends.tf.optim import Optimizer
from lbbench.methods import cblr as cblr_method
from lbbench.methods import extrap_sgd as extrap_method
from lbbench.methods import get_method
from lbbench.methods import kfac as kfac_method
from lbbench.spec import RunSpec


class Standard:
    """Average the K micro-batch gradients, hand them to the update rule."""

    def __init__(self, spec: RunSpec, model: Any, rank: int = 0, size: int = 1):
        self.spec = spec
        info = get_method(spec.method)
        rule, hparams = info.update_rule(spec.hparams)
        self.optimizer = Optimizer(rule, hparams, model.trainable_variables, spec.lr.peak_lr)
        self._loss_weight = info.loss_weight

    def weight(self, step: int, epoch: int, k: int, K: int) -> float:
        """Micro-batch k's loss weight (GradientMix: K c_k; others 1)."""
        if self._loss_weight is None:
            return 1.0
        return self._loss_weight(self.spec.hparams, self.spec.seed, step, epoch, k, K)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum = loop.accum
        acc, local = None, tf.zeros([], loop.dtype)
        micro: list[float] | None = [] if loop.diag_active(step) else None
        loop.begin_step()
        for a in range(accum):
            x, y = loop.next_batch()
            w = self.weight(step, epoch, loop.virtual_worker(a), loop.virtual_workers) / accum
            loss, g = loop.forward_backward(x, y, w)
            if micro is not None:
                micro.append(squared_norm(g, accum))
            acc = g if acc is None else [s + gi for s, gi in zip(acc, g)]
            local += loss / accum
        assert acc is not None  # accum >= 1
        grads, loss = loop.allreduce(acc, local)
        if math.isfinite(loss):
            before = [tf.identity(v) for v in loop.vars] if micro is not None else None
            loop.update(grads)
            if micro is not None and before is not None:
                write_diag(loop, step, loss, grads, before, micro)
        return loss


class ExtrapSGD(Standard):
    """docs/methods.md section 5 (lbbench/methods/extrap_sgd.py). BN running statistics change only
    in the second pass: the first pass's updates are undone (= momentum 0 for that pass)."""

    def __init__(self, spec: RunSpec, model: Any, rank: int = 0, size: int = 1):
        super().__init__(spec, model, rank, size)
        self.hp, self.model = spec.hparams, model
        self.bn_stats = [v for v in model.non_trainable_variables if "moving_" in v.name]

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum, hp, vars_ = loop.accum, self.hp, loop.vars
        gx = hp["extrap_scale"] * self.optimizer.lr
        saved = [tf.identity(v) for v in vars_]
        h_sum, local = [tf.zeros_like(v) for v in vars_], tf.zeros([], loop.dtype)
        micro: list[float] | None = [] if loop.diag_active(step) else None
        loop.begin_step()
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
            else:  # drawn in PyTorch's layout and transposed: the PyTorch backend's noise, weight by weight
                rng = extrap_method.noise_rng(self.spec.seed, step, loop.virtual_worker(a))
                drawn = extrap_method.draw_noise(
                    rng, [torch_layout(v.shape) for v in vars_], hp["perturbation"], hp["noise_scale"]
                )
                for v, z in zip(vars_, drawn):
                    v.assign_add(tf.constant(from_torch_layout(z), v.dtype))
            loss, h = loop.forward_backward(x, y, 1.0)
            if micro is not None:  # the virtual worker's gradient, at its extrapolated point
                micro.append(squared_norm(h))
            local += loss / accum
            h_sum = [s + hi / accum for s, hi in zip(h_sum, h)]
            for v, w in zip(vars_, saved):
                v.assign(w)  # every micro-batch extrapolates from the same w
        grads, loss = loop.allreduce(h_sum, local)
        if math.isfinite(loss):
            before = [tf.identity(v) for v in vars_] if micro is not None else None
            loop.update(grads)
            if micro is not None and before is not None:
                write_diag(loop, step, loss, grads, before, micro)
        return loss


class CurvatureLR(Standard):
    """CBLR: on refresh steps, Hutchinson probes of the Hessian diagonal per micro-batch, seeded
    by (seed, step, virtual worker): the PyTorch backend's probes, drawn the same way."""

    def __init__(self, spec: RunSpec, model: Any, rank: int = 0, size: int = 1):
        super().__init__(spec, model, rank, size)
        self.samples = spec.hparams["hutchinson_samples"]
        self.model = model

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        if not cblr_method.is_curvature_step(step, self.spec.hparams):
            return super().step(loop, step, epoch)
        accum, vars_ = loop.accum, loop.vars
        acc = [tf.zeros_like(v) for v in vars_]
        diag = [tf.zeros_like(v) for v in vars_]
        local = tf.zeros([], loop.dtype)
        loop.begin_step()
        for a in range(accum):
            x, y = loop.next_batch()
            t0 = time.perf_counter()
            rng = cblr_method.probe_rng(self.spec.seed, step, loop.virtual_worker(a))
            # drawn in the PyTorch layout (OIHW, (out, in)) and transposed: the same probe per weight
            zs = [
                [
                    tf.constant(from_torch_layout(z), loop.dtype)
                    for z in cblr_method.rademacher(rng, [torch_layout(v.shape) for v in vars_])
                ]
                for _ in range(self.samples)
            ]
            loss, g, hz = self._grad_and_hvp(loop, x, y, zs)
            acc = [s + gi / accum for s, gi in zip(acc, g)]
            for z_list, h_list in zip(zs, hz):
                diag = [d + z * h / (self.samples * accum) for d, z, h in zip(diag, z_list, h_list)]
            loop.backward_passes += 1 + self.samples
            loop.times["compute"] += time.perf_counter() - t0
            local += loss / accum
        self.optimizer.set_curvature(loop.hvd.grouped_allreduce(diag, op=loop.hvd.Average))
        assert acc is not None  # accum >= 1
        grads, loss = loop.allreduce(acc, local)
        if math.isfinite(loss):
            loop.update(grads)
        return loss

    def _grad_and_hvp(self, loop: Loop, x, y, zs):
        """(the micro-batch's mean loss, the gradient of its training loss - small-loss discarding
        applies on refresh steps too - and the Hessian-vector products with the probes)."""
        vars_, smoothing = self.model.trainable_variables, self.spec.label_smoothing
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                per = per_sample_loss(self.model(x, training=True), y, smoothing)
                loss = loop.micro_loss(per)
            g = inner.gradient(loss, vars_)
        hz = [outer.gradient(g, vars_, output_gradients=z) for z in zs]
        del outer
        return tf.reduce_mean(per), g, hz


class KFAC(Standard):
    """The step: factors on factor steps, preconditioned gradients, momentum with the LR inside."""

    def __init__(self, spec: RunSpec, model: Any, rank: int = 0, size: int = 1):
        from lbbench.backends.tf.kfac import KFACPreconditioner

        super().__init__(spec, model, rank, size)
        self.hp, self.model = spec.hparams, model
        self.sgd_hp = self.optimizer.hp
        self.pre = KFACPreconditioner(model, self.hp, rank, size)
        self.prev_lr: float | None = None

    def state_dict(self) -> dict:
        import horovod.tensorflow as hvd

        return {"pre": self.pre.full_state(hvd), "prev_lr": self.prev_lr}

    def load_state_dict(self, state: dict) -> None:
        self.pre.load_full_state(state["pre"])
        self.prev_lr = state["prev_lr"]

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        capture = kfac_method.is_factor_step(step, self.hp)
        accum = loop.accum
        acc, local = None, tf.zeros([], loop.dtype)
        micro: list[float] | None = [] if loop.diag_active(step) else None
        loop.begin_step()
        for _ in range(accum):
            x, y = loop.next_batch()
            if capture:
                t0 = time.perf_counter()
                loss, g = self.pre.micro_stats(
                    self.model, x, y, 1.0 / accum, self.spec.label_smoothing, loop.micro_loss
                )
                loop.backward_passes += 1
                loop.times["compute"] += time.perf_counter() - t0
            else:
                loss, g = loop.forward_backward(x, y, 1.0 / accum)
            if micro is not None:
                micro.append(squared_norm(g, accum))
            acc = g if acc is None else [s + gi for s, gi in zip(acc, g)]
            local += loss / accum
        assert acc is not None  # accum >= 1
        grads, loss = loop.allreduce(acc, local)
        if not math.isfinite(loss):
            return loss
        raw = grads  # the noise scale is the gradient's, before preconditioning
        before = [tf.identity(v) for v in loop.vars] if micro is not None else None
        with loop.timed("optimizer"):
            if capture:
                self.pre.reduce(loop.hvd)
            if kfac_method.is_inverse_step(step, self.hp):
                self.pre.invert()
            lr = self.optimizer.lr
            grads = self.pre.precondition(grads, loop.hvd, lr)
            mu = kfac_method.adjusted_momentum(self.hp["momentum"], lr, self.prev_lr, self.hp["momentum_adjust"])
            self.optimizer.hp = dict(self.sgd_hp, momentum=mu)
            self.prev_lr = lr
            self.optimizer.step(grads)
            if self.hp["weight_rescale"]:
                from lbbench.backends.tf.kfac import rescale_weights

                rescale_weights(self.pre.layers)
        if micro is not None and before is not None:
            write_diag(loop, step, loss, raw, before, micro)
        return loss


STEPS: dict[str, type[Standard]] = {"standard": Standard, "extrap": ExtrapSGD, "curvature": CurvatureLR, "kfac": KFAC}


def build_method(spec: RunSpec, model: Any, rank: int = 0, size: int = 1) -> Standard:
    return STEPS[get_method(spec.method).step](spec, model, rank, size)

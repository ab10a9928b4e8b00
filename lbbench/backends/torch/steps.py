"""Training-step strategies (PyTorch), one per step kind of the registry
(lbbench/methods/registry.py: STEP_KINDS), in one table ``STEPS``:

  standard   accumulate the micro-batch gradients (each loss weighted by the method's
             ``loss_weight`` - GradientMix - or 1), one allreduce, the update rule
  extrap     EXTRAP-SGD's two passes per micro-batch, one allreduce
  curvature  CBLR: on refresh steps the Hessian diagonal by Hutchinson probes
  kfac       K-FAC / SP-NGD: factors from the step's own passes, preconditioned gradients

Every strategy builds the update rule the registry names for the method (``update_rule``) from
lbbench/backends/torch/optim/. The TensorFlow backend has the same table
(lbbench/backends/tf/steps.py).
"""

from __future__ import annotations

import math
import time
from typing import Any, cast

import torch

from lbbench.backends.torch.loop import Loop, grouped_allreduce
from lbbench.backends.torch.optim import build_optimizer
from lbbench.methods import cblr as cblr_method
from lbbench.methods import extrap_sgd as extrap_method
from lbbench.methods import get_method
from lbbench.methods import kfac as kfac_method
from lbbench.spec import RunSpec


class Standard:
    """Average the K micro-batch gradients, hand them to the update rule."""

    def __init__(self, spec: RunSpec, model: torch.nn.Module, rank: int = 0, size: int = 1):
        self.spec = spec
        info = get_method(spec.method)
        rule, hparams = info.update_rule(spec.hparams)
        self.optimizer = build_optimizer(rule, hparams, model, spec.lr.peak_lr)
        self._loss_weight = info.loss_weight

    def weight(self, step: int, epoch: int, k: int, K: int) -> float:
        """Micro-batch k's loss weight (GradientMix: K c_k; others 1)."""
        if self._loss_weight is None:
            return 1.0
        return self._loss_weight(self.spec.hparams, self.spec.seed, step, epoch, k, K)

    def update(self, loop: Loop) -> None:
        with loop.timed("optimizer"):
            loop.optimizer_step(self.optimizer)

    # State beyond the optimizer's own (checkpoints).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum = loop.accum
        diag = loop.diag if loop.diag and loop.diag.active(step) else None
        loop.begin_step()
        loop.zero_grad()
        if diag:
            diag.begin_step(loop.params)
        local = torch.zeros((), device=loop.device, dtype=loop.dtype)
        for a in range(accum):
            x, y = loop.next_batch()
            w = self.weight(step, epoch, loop.virtual_worker(a), loop.virtual_workers) / accum
            if a == accum - 1:  # the gradients become final during this backward pass
                loop.arm_overlap(keep_local=diag is not None)  # diag reads the local gradient
            local += loop.forward_backward(x, y, w) / accum
            if diag:
                diag.after_micro(loop.params, accum, loop.loss_scale())
        loss = loop.allreduce_grads(local)
        if math.isfinite(loss):
            before = [p.detach().clone() for p in loop.params] if diag else None
            self.update(loop)
            if diag and before is not None:
                self.write_diag(loop, diag, step, loss, before)
        return loss

    def write_diag(self, loop: Loop, diag: Any, step: int, loss: float, before: list, grads: Any = None) -> None:
        row = diag.row(loop.params, before, loop.hvd, self.spec.local_batch, loop.global_batch, grads)
        loop.metrics.write("diag", step=step, loss=loss, **row)


class ExtrapSGD(Standard):
    """docs/methods.md section 5; lbbench/methods/extrap_sgd.py has the formula."""

    def __init__(self, spec: RunSpec, model: torch.nn.Module, rank: int = 0, size: int = 1):
        super().__init__(spec, model, rank, size)
        self.hp, self.model = spec.hparams, model
        self.bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self._bn_momenta: list[float | None] = []
        self.order = list(model.parameters())  # the order noise is drawn in (the TF model's too)

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        accum, params, hp = loop.accum, loop.params, self.hp
        lr = self.optimizer.param_groups[0]["lr"]
        gx = hp["extrap_scale"] * lr
        saved = [p.detach().clone() for p in params]
        h_sum = [torch.zeros_like(p) for p in params]
        local = torch.zeros((), device=loop.device, dtype=loop.dtype)
        diag = loop.diag if loop.diag and loop.diag.active(step) else None
        if diag:
            diag.begin_step(params)
        loop.begin_step()
        for a in range(accum):
            x, y = loop.next_batch()
            with torch.no_grad():
                for p in params:
                    p.grad = None
            if hp["perturbation"] == "extragradient":
                self._set_bn_momentum(0.0)  # running statistics: second pass only
                loop.forward_backward(x, y, 1.0)
                self._set_bn_momentum(None)
                with torch.no_grad():
                    for p in params:
                        buf = self.optimizer.state[p].get("momentum_buffer")
                        d = p.grad if buf is None else p.grad.add(buf, alpha=hp["momentum"])
                        p.sub_(d, alpha=gx)
                        p.grad = None
            else:
                with torch.no_grad():
                    rng = extrap_method.noise_rng(self.spec.seed, step, loop.virtual_worker(a))
                    drawn = extrap_method.draw_noise(
                        rng, [tuple(q.shape) for q in self.order], hp["perturbation"], hp["noise_scale"]
                    )
                    noise = {id(q): torch.from_numpy(z).to(q.device, q.dtype) for q, z in zip(self.order, drawn)}
                    for p in params:
                        p.add_(noise[id(p)])
            local += loop.forward_backward(x, y, 1.0) / accum
            if diag:  # the virtual worker's gradient, at its extrapolated point
                diag.micro([p.grad for p in params], 1.0 / loop.loss_scale())
            with torch.no_grad():
                for p, h, w in zip(params, h_sum, saved):
                    h.add_(p.grad, alpha=1.0 / accum)
                    p.copy_(w)  # every micro-batch extrapolates from the same w
        for p, h in zip(params, h_sum):
            p.grad = h
        loss = loop.allreduce_grads(local)
        if math.isfinite(loss):
            before = [p.detach().clone() for p in params] if diag else None
            self.update(loop)
            if diag and before is not None:
                self.write_diag(loop, diag, step, loss, before)
        return loss

    def _set_bn_momentum(self, value: float | None) -> None:
        if value is None:
            for m, saved in zip(self.bns, self._bn_momenta):
                m.momentum = saved
            return
        self._bn_momenta = [m.momentum for m in self.bns]
        for m in self.bns:
            m.momentum = value


class CurvatureLR(Standard):
    """CBLR: on refresh steps every micro-batch's gradient is taken with a graph and probed
    with Hutchinson vectors seeded by (seed, step, virtual worker), so the estimate - averaged
    over micro-batches and ranks - is the same whatever np x accum split K."""

    def __init__(self, spec: RunSpec, model: torch.nn.Module, rank: int = 0, size: int = 1):
        super().__init__(spec, model, rank, size)
        self.samples = spec.hparams["hutchinson_samples"]
        self.order = list(model.parameters())  # the order probes are drawn in

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        if not cblr_method.is_curvature_step(step, self.spec.hparams):
            return super().step(loop, step, epoch)
        from lbbench.backends.torch.optim.cblr import CBLR, hutchinson_diag

        accum, params = loop.accum, loop.params
        loop.begin_step()
        loop.zero_grad()
        local = torch.zeros((), device=loop.device, dtype=loop.dtype)
        diag = [torch.zeros_like(p) for p in params]
        for a in range(accum):
            x, y = loop.next_batch()
            t0 = time.perf_counter()
            per_sample = loop.per_sample(x, y)
            loss = loop.micro_loss(per_sample)  # small-loss discarding applies on refresh steps too
            grads = torch.autograd.grad(loss, params, create_graph=True)
            rng = cblr_method.probe_rng(self.spec.seed, step, loop.virtual_worker(a))
            with torch.no_grad():
                for p, g, d, h in zip(
                    params, grads, diag, hutchinson_diag(grads, params, self.samples, rng, self.order)
                ):
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.add_(g.detach(), alpha=1.0 / accum)
                    d.add_(h, alpha=1.0 / accum)
            loop.backward_passes += 1 + self.samples
            loop.times["compute"] += time.perf_counter() - t0
            local += per_sample.mean().detach() / accum
        curvature = grouped_allreduce(loop.hvd, diag, "lbbench.cblr.curvature", op=loop.hvd.Average)
        cast(CBLR, self.optimizer).set_curvature(params, curvature)
        total = loop.allreduce_grads(local)
        if math.isfinite(total):
            self.update(loop)
        return total


class KFAC(Standard):
    """K-FAC / SP-NGD: factors from the step's own forward/backward, preconditioned gradients,
    momentum with the LR inside (lbbench/methods/kfac.py)."""

    def __init__(self, spec: RunSpec, model: torch.nn.Module, rank: int = 0, size: int = 1):
        from lbbench.backends.torch.kfac import KFACPreconditioner

        super().__init__(spec, model, rank, size)
        self.hp = spec.hparams
        self.pre = KFACPreconditioner(model, self.hp, rank, size)
        self.prev_lr: float | None = None
        self.last_invert_s = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"pre": self.pre.full_state(), "prev_lr": self.prev_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pre.load_full_state(state["pre"])
        self.prev_lr = state["prev_lr"]

    def step(self, loop: Loop, step: int, epoch: int) -> float:
        capture = kfac_method.is_factor_step(step, self.hp)
        accum = loop.accum
        self.pre.begin(capture, 1.0 / accum)
        diag = loop.diag if loop.diag and loop.diag.active(step) else None
        loop.begin_step()
        loop.zero_grad()
        if diag:
            diag.begin_step(loop.params)
        local = torch.zeros((), device=loop.device, dtype=loop.dtype)
        for _ in range(accum):
            x, y = loop.next_batch()
            local += loop.forward_backward(x, y, 1.0 / accum) / accum
            if diag:
                diag.after_micro(loop.params, accum, loop.loss_scale())
        self.pre.capturing = False
        loss = loop.allreduce_grads(local)
        if not math.isfinite(loss):
            return loss
        # the noise scale is the gradient's, measured before preconditioning replaces it
        raw = [p.grad.detach().clone() for p in loop.params] if diag else None
        before = [p.detach().clone() for p in loop.params] if diag else None
        with loop.timed("optimizer"):
            if capture:
                self.pre.reduce(loop.hvd)
            if kfac_method.is_inverse_step(step, self.hp):
                t_inv = time.perf_counter()
                self.pre.invert()
                self.last_invert_s = time.perf_counter() - t_inv
            group_lr = self.optimizer.param_groups[0]["lr"]
            self.pre.precondition(loop.hvd, group_lr)
            mu = kfac_method.adjusted_momentum(self.hp["momentum"], group_lr, self.prev_lr, self.hp["momentum_adjust"])
            for g in self.optimizer.param_groups:
                g["momentum"] = mu
            self.prev_lr = group_lr
            self.optimizer.step()
            if self.hp["weight_rescale"]:
                from lbbench.backends.torch.kfac import rescale_weights

                rescale_weights(self.pre.layers)
        if diag and before is not None:
            self.write_diag(loop, diag, step, loss, before, raw)
        return loss


STEPS: dict[str, type[Standard]] = {"standard": Standard, "extrap": ExtrapSGD, "curvature": CurvatureLR, "kfac": KFAC}


def build_method(spec: RunSpec, model: torch.nn.Module, rank: int = 0, size: int = 1) -> Standard:
    return STEPS[get_method(spec.method).step](spec, model, rank, size)

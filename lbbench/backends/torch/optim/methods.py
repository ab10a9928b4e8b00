"""Training-step strategies. A plain optimizer method needs only the standard step
(accumulate, allreduce, update); GradientMix weights the micro-batch losses; EXTRAP-SGD has
its own two-pass step. ``build_method`` picks by the registry name.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from lbbench.backends.torch.optim import build_optimizer
from lbbench.spec import RunSpec


class Standard:
    """Average the K micro-batch gradients, hand them to the optimizer."""

    def __init__(self, spec: RunSpec, model, method: str | None = None, hparams: dict | None = None):
        self.spec = spec
        self.optimizer = build_optimizer(method or spec.method, hparams or spec.hparams, model, spec.lr.peak_lr)

    def weight(self, step: int, epoch: int, k: int, K: int) -> float:
        return 1.0

    def update(self, loop) -> None:
        t0 = time.perf_counter()
        loop.optimizer_step(self.optimizer)
        loop.sync()
        loop.times["optimizer"] += time.perf_counter() - t0

    # State beyond the optimizer's own (checkpoints).
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def step(self, loop, step: int, epoch: int) -> float:
        accum = loop.accum
        diag = loop.diag if loop.diag and loop.diag.active(step) else None
        loop.zero_grad()
        if diag:
            diag.begin_step(loop.params)
        local = torch.zeros((), device=loop.device)
        for a in range(accum):
            x, y = loop.next_batch()
            local += loop.forward_backward(x, y, self.weight(step, epoch, loop.virtual_worker(a), loop.virtual_workers) / accum) / accum
            if diag:
                diag.after_micro(loop.params, accum)
        loss = loop.allreduce_grads(local)
        if math.isfinite(loss):
            before = [p.detach().clone() for p in loop.params] if diag else None
            self.update(loop)
            if diag:
                loop.metrics.write("diag", step=step, loss=loss, **diag.row(
                    loop.params, before, loop.hvd, self.spec.local_batch, loop.global_batch))
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
    """METHODS.md section 5; see lbbench/methods/extrap_sgd.py for the formula."""

    def __init__(self, spec: RunSpec, model):
        hp = spec.hparams
        sgd_hp = dict(momentum=hp["momentum"], nesterov=True, weight_decay=hp["weight_decay"],
                      exclude_bn_bias=hp["exclude_bn_bias"], lr_convention="outside")
        super().__init__(spec, model, "sgd", sgd_hp)
        self.hp, self.model = hp, model
        self.bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.noise = np.random.default_rng(spec.seed * 7 + 1)   # NumPy: the same noise in both backends
        self.order = list(model.parameters())

    def step(self, loop, step: int, epoch: int) -> float:
        accum, params, hp = loop.accum, loop.params, self.hp
        lr = self.optimizer.param_groups[0]["lr"]
        gx = hp["extrap_scale"] * lr
        saved = [p.detach().clone() for p in params]
        h_sum = [torch.zeros_like(p) for p in params]
        local = torch.zeros((), device=loop.device)
        for a in range(accum):
            x, y = loop.next_batch()
            with torch.no_grad():
                for p in params:
                    p.grad = None
            if hp["perturbation"] == "extragradient":
                self._set_bn_momentum(0.0)          # running statistics: second pass only
                loop.forward_backward(x, y, 1.0)
                self._set_bn_momentum(None)
                with torch.no_grad():
                    for p in params:
                        buf = self.optimizer.state[p].get("momentum_buffer")
                        d = p.grad if buf is None else p.grad.add(buf, alpha=hp["momentum"])
                        p.sub_(d, alpha=gx)
                        p.grad = None
            else:
                with torch.no_grad():   # drawn in the model's parameter order (the TF backend's too)
                    noise = {id(q): self._noise(q) for q in self.order}
                    for p in params:
                        p.add_(noise[id(p)])
            local += loop.forward_backward(x, y, 1.0) / accum
            with torch.no_grad():
                for p, h, w in zip(params, h_sum, saved):
                    h.add_(p.grad, alpha=1.0 / accum)
                    p.copy_(w)                    # every micro-batch extrapolates from the same w
        for p, h in zip(params, h_sum):
            p.grad = h
        loss = loop.allreduce_grads(local)
        if math.isfinite(loss):
            self.update(loop)
        return loss

    def state_dict(self) -> dict:
        return {"noise_rng": self.noise.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.noise.bit_generator.state = state["noise_rng"]

    def _noise(self, p):
        s = self.hp["noise_scale"]
        if self.hp["perturbation"] == "gaussian":
            z = self.noise.standard_normal(tuple(p.shape)).astype(np.float32) * s
        else:
            z = (self.noise.random(tuple(p.shape)).astype(np.float32) * 2 - 1) * s
        return torch.from_numpy(z).to(p.device, p.dtype)

    def _set_bn_momentum(self, value):
        for m in self.bns:
            if value is None:
                m.momentum = m._lbbench_momentum
            else:
                m._lbbench_momentum, m.momentum = m.momentum, value


class CurvatureLR(Standard):
    """CBLR: on refresh steps every micro-batch's gradient is taken with a graph and probed
    with Hutchinson vectors seeded by (seed, step, virtual worker), so the estimate - averaged
    over micro-batches and ranks - is the same whatever np x accum split K."""

    def __init__(self, spec: RunSpec, model):
        super().__init__(spec, model)
        self.every, self.samples = spec.hparams["curvature_every"], spec.hparams["hutchinson_samples"]
        self.order = list(model.parameters())     # the order probes are drawn in

    def step(self, loop, step: int, epoch: int) -> float:
        if (step - 1) % self.every:
            return super().step(loop, step, epoch)
        from lbbench.backends.torch.optim.cblr import hutchinson_diag
        accum, params = loop.accum, loop.params
        loop.zero_grad()
        local = torch.zeros((), device=loop.device)
        diag = [torch.zeros_like(p) for p in params]
        for a in range(accum):
            x, y = loop.next_batch()
            t0 = time.perf_counter()
            loss = loop.forward_loss(x, y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            rng = np.random.default_rng([self.spec.seed, step, loop.virtual_worker(a)])
            with torch.no_grad():
                for p, g, d, h in zip(params, grads, diag, hutchinson_diag(grads, params, self.samples, rng, self.order)):
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.add_(g.detach(), alpha=1.0 / accum)
                    d.add_(h, alpha=1.0 / accum)
            loop.backward_passes += 1 + self.samples
            loop.times["compute"] += time.perf_counter() - t0
            local += loss.detach() / accum
        self.optimizer.set_curvature(params, loop.hvd.grouped_allreduce(diag, op=loop.hvd.Average))
        loss = loop.allreduce_grads(local)
        if math.isfinite(loss):
            self.update(loop)
        return loss


class KFAC(Standard):
    """K-FAC / SP-NGD: factors from the step's own forward/backward, preconditioned gradients,
    momentum with the LR inside (lbbench/methods/kfac.py)."""

    def __init__(self, spec: RunSpec, model, rank: int, size: int):
        from lbbench.backends.torch.optim.kfac import KFACPreconditioner
        hp = spec.hparams
        sgd_hp = dict(momentum=hp["momentum"], nesterov=False, weight_decay=0.0, exclude_bn_bias=True,
                      lr_convention="inside")   # weight decay is added before preconditioning
        super().__init__(spec, model, "sgd", sgd_hp)
        self.hp = hp
        self.pre = KFACPreconditioner(model, hp, rank, size)
        self.prev_lr = None

    def state_dict(self) -> dict:
        return {"pre": self.pre.full_state(), "prev_lr": self.prev_lr}

    def load_state_dict(self, state: dict) -> None:
        self.pre.load_full_state(state["pre"])
        self.prev_lr = state["prev_lr"]

    def step(self, loop, step: int, epoch: int) -> float:
        capture = (step - 1) % self.hp["factor_every"] == 0
        accum = loop.accum
        self.pre.begin(capture, 1.0 / accum)
        loop.zero_grad()
        local = torch.zeros((), device=loop.device)
        for _ in range(accum):
            x, y = loop.next_batch()
            local += loop.forward_backward(x, y, 1.0 / accum) / accum
        self.pre.capturing = False
        loss = loop.allreduce_grads(local)
        if not math.isfinite(loss):
            return loss
        t0 = time.perf_counter()
        if capture:
            self.pre.reduce(loop.hvd)
        if (step - 1) % self.hp["inverse_every"] == 0:
            t_inv = time.perf_counter()
            self.pre.invert()
            self.last_invert_s = time.perf_counter() - t_inv
        group_lr = self.optimizer.param_groups[0]["lr"]
        self.pre.precondition(loop.hvd, group_lr)
        from lbbench.methods.kfac import adjusted_momentum
        mu = adjusted_momentum(self.hp["momentum"], group_lr, self.prev_lr, self.hp["momentum_adjust"])
        for g in self.optimizer.param_groups:
            g["momentum"] = mu
        self.prev_lr = group_lr
        self.optimizer.step()
        loop.sync()
        loop.times["optimizer"] += time.perf_counter() - t0
        return loss


def build_method(spec: RunSpec, model, rank: int = 0, size: int = 1):
    if spec.method == "kfac":
        return KFAC(spec, model, rank, size)
    if spec.method == "cblr":
        return CurvatureLR(spec, model)
    if spec.method == "gradientmix":
        return GradientMix(spec, model)
    if spec.method == "extrap_sgd":
        return ExtrapSGD(spec, model)
    return Standard(spec, model)

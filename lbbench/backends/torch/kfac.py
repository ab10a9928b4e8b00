"""K-FAC / SP-NGD preconditioner (docs/methods.md section 7; the formula and the [lbbench] choices
are in lbbench/methods/kfac.py). The training-step strategy using it is KFAC in steps.py.

Factors are collected by hooks on the training forward/backward (no extra passes): a forward
hook keeps the layer input and hangs a hook on the output's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lbbench.backends.torch.loop import grouped_allreduce
from lbbench.methods.kfac import assign_owners, damping_split, kl_clip_scale


def damped_inverses(A: torch.Tensor, G: torch.Tensor, damping: float, weight_decay: float):
    """(A + pi sqrt(r) I)^-1 and (G + sqrt(r)/pi I)^-1 (lbbench/methods/kfac.py: damping_split)."""
    da, dg = damping_split(float(A.trace()), A.shape[0], float(G.trace()), G.shape[0], damping, weight_decay)
    return _inverse(A, da), _inverse(G, dg)


def _inverse(M: torch.Tensor, d: float) -> torch.Tensor:
    """(M + d I)^-1 by Cholesky; NaN where the factor is not positive definite (a diverging run's
    factors hold inf/NaN). Not an exception: only the layer's owner inverts, and an exception on
    one rank would leave the others waiting in the next collective; NaN goes through the
    allreduce to every rank and the run is marked diverged at its next loss."""
    L, info = torch.linalg.cholesky_ex(M + d * torch.eye(M.shape[0], dtype=M.dtype, device=M.device))
    if int(info) != 0:
        return torch.full_like(M, float("nan"))
    return torch.cholesky_inverse(L)


Layer = nn.Conv2d | nn.Linear  # the layers K-FAC preconditions with Kronecker factors
BatchNorm = nn.modules.batchnorm._BatchNorm


def _grad(p: torch.Tensor | None) -> torch.Tensor:
    assert p is not None and p.grad is not None  # preconditioning follows a backward pass
    return p.grad


def input_rows(module: Layer, a: torch.Tensor) -> torch.Tensor:
    """Rows whose outer products make A: Linear inputs, or Conv im2col patches; + 1 for a bias."""
    if isinstance(module, nn.Conv2d):
        padding = cast(tuple[int, ...], module.padding)  # lbbench's convs pad by numbers, never "same"
        a = F.unfold(a, module.kernel_size, module.dilation, padding, module.stride)
        a = a.transpose(1, 2).reshape(-1, a.shape[1])
    if module.bias is not None:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1)
    return a


def output_rows(module: Layer, d: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return d.permute(0, 2, 3, 1).reshape(-1, d.shape[1])
    return d


def grad_matrix(module: Layer, extra_wd: float) -> torch.Tensor:
    """The layer's gradient as an (out, in[+1]) matrix, weight decay added to the weight."""
    g = _grad(module.weight).reshape(module.weight.shape[0], -1) + extra_wd * module.weight.detach().reshape(
        module.weight.shape[0], -1
    )
    if module.bias is not None:
        g = torch.cat([g, _grad(module.bias).reshape(-1, 1)], dim=1)
    return g


class KFACPreconditioner:
    def __init__(self, model: nn.Module, hp: dict, rank: int, size: int):
        self.hp, self.rank, self.size = hp, rank, size
        self.layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        self.bns = (
            [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if hp["bn_fisher"] == "unit_wise"
            else []
        )
        self.capturing, self.scale = False, 1.0
        self.acc: dict[nn.Module, list] = {}
        self.A: dict[nn.Module, torch.Tensor] = {}
        self.G: dict[nn.Module, torch.Tensor] = {}
        self.F: dict[nn.Module, torch.Tensor] = {}  # BN: (C, 2, 2)
        self.inv: dict[nn.Module, tuple] = {}
        for m in self.layers + self.bns:
            m.register_forward_hook(self._forward_hook)
        # Greedy by n^3: the costliest inversions first, each to the least-loaded rank.
        costs = [float(input_rows_dim(m) ** 3 + m.weight.shape[0] ** 3) for m in self.layers]
        self.owner = dict(zip(self.layers, assign_owners(costs, size)))

    # -- statistics ------------------------------------------------------------------------
    def begin(self, capture: bool, scale: float) -> None:
        self.capturing, self.scale, self.acc = capture, scale, {}

    def _forward_hook(self, module, inputs, output):
        if not (self.capturing and module.training and torch.is_grad_enabled()):
            return
        a = inputs[0].detach()
        n = a.shape[0]
        output.register_hook(lambda d, m=module, a=a, n=n: self._grad_hook(m, a, d.detach() / self.scale, n))

    def _grad_hook(self, m, a, d, n):
        # Statistics in float32 at least, whatever autocast computed the layer in (bf16 has no
        # Cholesky, and its 8-bit mantissa would lose the factors); float64 runs stay float64.
        dtype = torch.promote_types(a.dtype, torch.float32)
        a, d = a.to(dtype), d.to(dtype)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            stat: tuple[torch.Tensor, ...] = (_bn_unit_fisher(m, a, d * n),)
        else:
            # A sums the patches over the output locations and averages over the samples, G
            # averages the output gradients over both (chainerkfac's scale, the KFC paper's).
            rows, drows = input_rows(m, a), output_rows(m, d) * n
            stat = (rows.T @ rows / n, drows.T @ drows / drows.shape[0])
        prev = self.acc.get(m)
        self.acc[m] = [s + p for s, p in zip(stat, prev)] + [prev[-1] + 1] if prev else list(stat) + [1]

    def reduce(self, hvd) -> None:
        """Mean over this step's micro-batches, then over ranks; blend with stat_decay."""
        mods = [m for m in self.layers + self.bns if m in self.acc]
        local = [s / self.acc[m][-1] for m in mods for s in self.acc[m][:-1]]
        averaged = iter(
            grouped_allreduce(hvd, local, "lbbench.kfac.factors", op=hvd.Average) if self.size > 1 else local
        )
        w = self.hp["stat_decay"]
        for m in mods:
            for store in (self.F,) if m in self.bns else (self.A, self.G):
                new = next(averaged)
                store[m] = new if m not in store or w >= 1 else (1 - w) * store[m] + w * new
        self.acc = {}

    def invert(self) -> None:
        for m in self.layers:
            if self.owner[m] == self.rank and m in self.A:
                self.inv[m] = damped_inverses(self.A[m], self.G[m], self.hp["damping"], self.hp["weight_decay"])

    # -- preconditioning -------------------------------------------------------------------
    @torch.no_grad()
    def precondition(self, hvd, lr: float) -> None:
        """Replace the gradients of Conv/Linear (and BN) parameters by their natural-gradient
        directions (weight decay included); the owners compute, one allreduce shares."""
        wd = self.hp["weight_decay"]
        out, raw = [], []
        for m in self.layers:
            g = grad_matrix(m, wd)
            raw.append(g)
            if self.owner[m] == self.rank:
                Ainv, Ginv = self.inv[m]
                out.append(Ginv @ g @ Ainv)
            else:
                out.append(torch.zeros_like(g))
        if self.size > 1:
            out = grouped_allreduce(hvd, out, "lbbench.kfac.directions", op=hvd.Sum)
        nu = 1.0
        if self.hp["kl_clip"] > 0:
            nu = kl_clip_scale(sum(float((p * g).sum()) for p, g in zip(out, raw)) * lr * lr, self.hp["kl_clip"])
        for m, p in zip(self.layers, out):
            p = p * nu
            if m.bias is not None:
                _grad(m.bias).copy_(p[:, -1])
                p = p[:, :-1]
            _grad(m.weight).copy_(p.reshape(m.weight.shape))
        for bn in self.bns:
            if bn in self.F:
                Fm = self.F[bn] + self.hp["bn_damping_scale"] * max(wd, self.hp["damping"]) * torch.eye(
                    2, dtype=self.F[bn].dtype, device=self.F[bn].device
                )
                g = torch.stack([_grad(bn.weight), _grad(bn.bias)], dim=1).unsqueeze(-1)
                x, info = torch.linalg.solve_ex(Fm, g)  # NaN, not an exception, when singular (see _inverse)
                p = (x if int(info.max()) == 0 else torch.full_like(x, float("nan"))).squeeze(-1) * nu
                _grad(bn.weight).copy_(p[:, 0])
                _grad(bn.bias).copy_(p[:, 1])

    def modules(self) -> list[nn.Module]:
        """Every preconditioned module, in the order checkpoints index them."""
        return [*self.layers, *self.bns]

    def full_state(self) -> dict:
        """Factors and every rank's inverses, by layer index (checkpoints). Collective: each
        rank holds only the inverses it owns, so they are gathered."""
        idx = {m: i for i, m in enumerate(self.modules())}
        cpu = lambda v: tuple(x.cpu() for x in v) if isinstance(v, tuple) else v.cpu()
        out = {  # CPU copies: gathered as objects, every rank would otherwise allocate on every GPU
            name: {idx[m]: cpu(v) for m, v in store.items()}
            for name, store in (("A", self.A), ("G", self.G), ("F", self.F), ("inv", self.inv))
        }
        if self.size > 1:
            import horovod.torch as hvd

            for part in hvd.allgather_object(out["inv"]):
                out["inv"].update(part)
        return out

    def load_full_state(self, state: dict) -> None:
        """Restores the factors and inverses onto each layer's device (checkpoints are on the CPU)."""
        mods = self.modules()

        def dev(v, m):
            d = m.weight.device
            return tuple(x.to(d) for x in v) if isinstance(v, tuple) else v.to(d)

        for name, store in (("A", self.A), ("G", self.G), ("F", self.F), ("inv", self.inv)):
            store.clear()
            store.update({mods[i]: dev(v, mods[i]) for i, v in state[name].items()})

    def state(self) -> dict:
        """The factors, in layer order (the same on every rank after ``reduce``)."""
        return {
            "A": [self.A.get(m) for m in self.layers],
            "G": [self.G.get(m) for m in self.layers],
            "F": [self.F.get(m) for m in self.bns],
        }


def input_rows_dim(m: Layer) -> int:
    d = m.weight[0].numel()
    return d + (1 if m.bias is not None else 0)


def _bn_unit_fisher(m: BatchNorm, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the per-channel 2x2 outer product of (dL/dgamma, dL/dbeta) per sample,
    with x-hat from the batch (or BN-span) statistics the training forward used."""
    n = x.shape[0]
    span = getattr(m, "span", None) or n
    xs = x.reshape(n // span, span, *x.shape[1:])
    mean = xs.mean(dim=(1, 3, 4), keepdim=True)
    var = xs.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
    xhat = ((xs - mean) / torch.sqrt(var + m.eps)).reshape_as(x)
    dgamma = (dy * xhat).sum(dim=(2, 3))  # (N, C)
    dbeta = dy.sum(dim=(2, 3))
    v = torch.stack([dgamma, dbeta], dim=2)  # (N, C, 2)
    return torch.einsum("nci,ncj->cij", v, v) / n


@torch.no_grad()
def rescale_weights(layers: Sequence[Layer]) -> None:
    """chainerkfac's weight rescaling (its ImageNet recipes' ``normalize_weight``): after every
    update, each Conv/Linear weight is scaled down to the norm sqrt(2 x out channels) when it
    exceeds it - SP-NGD's replacement for weight decay."""
    for m in layers:
        w = m.weight
        target = (2.0 * w.shape[0]) ** 0.5
        w.mul_(torch.clamp(target / (torch.linalg.vector_norm(w) + 1e-9), max=1.0))

"""K-FAC / SP-NGD (Osawa et al. CVPR 2019, SP-NGD 2020; code: chainerkfac, kfac-pytorch;
docs/methods.md section 7).

Per Conv/Linear layer, from the step's own forward/backward: A = (1/N) sum_n sum_l a_nl a_nl^T over
the input rows (Conv: the im2col patches at every output location l; a bias adds a constant 1) and
G = (1/(N L)) sum_n sum_l (N d_nl)(N d_nl)^T, d = gradient of the micro-batch mean loss w.r.t. the
layer output (N d: the per-sample gradient) - chainerkfac's scale and the KFC paper's (Grosse &
Martens 2016: Omega sums over locations, Gamma averages); for a Linear layer L = 1. Both are
averaged over the micro-batches of a step and over ranks, in float32 or better under any AMP.
Damping by traces: r = max(weight_decay, damping); pi = sqrt((tr A / dim A) / (tr G / dim G));
preconditioned gradient = (G + sqrt(r)/pi I)^-1 grad (A + pi sqrt(r) I)^-1 (Cholesky);
[lbbench] pi = 1 when one factor's mean trace is below 1e-12 of the other's (a zero factor). BN:
unit-wise 2x2 Fisher per channel (SP-NGD), damped by ``bn_damping_scale`` x r (chainerkfac's
stab_coeff: 64 in its ImageNet recipes), or the plain gradient. Inversions are assigned to ranks
greedily by n^3 cost; owners precondition their layers and one allreduce shares the results.
Momentum with the LR inside; mu scaled by lr_t / lr_{t-1} when the LR drops; optional KL-clip;
optional weight rescaling after each update (chainerkfac's ``normalize_weight``: each Conv/Linear
weight scaled down to the norm sqrt(2 x out channels) when above it, SP-NGD's substitute for
weight decay).

[lbbench] choices: factor statistics ``stat_decay`` = weight of the new statistics (1 = fresh
every step); weight decay added to the gradient before preconditioning; the BN Fisher unit-wise
(per channel 2x2, as the SP-NGD paper; chainerkfac's code builds one (2C x 2C) block per BN layer);
the SP-NGD stale-statistics rule is not implemented (``factor_every`` / ``inverse_every`` instead).
"""

import math
from typing import Any

from lbbench.methods.registry import HParam, MethodInfo, open_keys, register


def sgd_rule(hp: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The update after preconditioning: momentum SGD with the LR inside; weight decay is
    already in the preconditioned gradient."""
    return "sgd", dict(
        momentum=hp["momentum"], nesterov=False, weight_decay=0.0, exclude_bn_bias=True, lr_convention="inside"
    )


KFAC = register(
    MethodInfo(
        name="kfac",
        doc=__doc__,
        opt_name="kfac",
        mllog_keys=open_keys("kfac_opt"),
        step="kfac",
        update=sgd_rule,
        hparams={
            "momentum": HParam(0.9, float, "mu (LR inside)"),
            "weight_decay": HParam(1e-4, float, "beta, added to the gradient; also floors the damping"),
            "exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases"),
            "damping": HParam(1e-3, float, "Tikhonov damping before the trace split"),
            "stat_decay": HParam(1.0, float, "weight of fresh factor statistics (1 = no running average)"),
            "factor_every": HParam(10, int, "steps between factor updates (kfac-pytorch's ImageNet example)"),
            "inverse_every": HParam(100, int, "steps between inversions (kfac-pytorch's ImageNet example)"),
            "bn_fisher": HParam("unit_wise", str, "BatchNorm preconditioning", choices=("unit_wise", "none")),
            "kl_clip": HParam(0.0, float, "KL-clip kappa (0: off)"),
            "momentum_adjust": HParam(True, bool, "scale mu by lr_t / lr_{t-1} when the LR drops"),
            "bn_damping_scale": HParam(1.0, float, "BN Fisher damping = this x max(weight_decay, damping)"),
            "weight_rescale": HParam(False, bool, "scale Conv/Linear weights to norm <= sqrt(2 out) after each update"),
        },
        lbbench_choices=(
            "stat_decay = weight of new statistics",
            "weight decay before preconditioning",
            "BN Fisher unit-wise (2x2 per channel)",
            "no stale-statistics rule",
        ),
    )
)


def damping_split(
    trace_a: float, dim_a: int, trace_g: float, dim_g: int, damping: float, weight_decay: float
) -> tuple[float, float]:
    """The damping added to A and to G: pi sqrt(r) and sqrt(r) / pi, r = max(weight_decay,
    damping), pi = sqrt((tr A / dim A) / (tr G / dim G)). A factor that is (numerically) zero -
    G of a conv feeding a zero-initialised BN gamma at step 1 - would make pi 0 or huge and the
    split meaningless: pi = 1 when one mean trace is below 1e-12 of the other."""
    r = max(weight_decay, damping)
    ta, tg = trace_a / dim_a, trace_g / dim_g
    pi = math.sqrt(ta / tg) if min(ta, tg) > 1e-12 * max(ta, tg, 1e-300) else 1.0
    return pi * math.sqrt(r), math.sqrt(r) / pi


def kl_clip_scale(vg: float, kappa: float) -> float:
    """KL-clip: nu = min(1, sqrt(kappa / |v^T g| lr^2)); ``vg`` already carries lr^2."""
    if kappa <= 0 or not vg:
        return 1.0
    return min(1.0, math.sqrt(kappa / abs(vg)))


def adjusted_momentum(mu: float, lr: float, prev_lr: float | None, adjust: bool) -> float:
    """mu scaled by lr_t / lr_{t-1} when the LR drops (SP-NGD's momentum adjustment)."""
    return mu * lr / prev_lr if adjust and prev_lr and lr < prev_lr else mu


def is_factor_step(step: int, hp: dict[str, Any]) -> bool:
    """Steps (1-based) whose forward/backward also collect the factors."""
    return (step - 1) % int(hp["factor_every"]) == 0


def is_inverse_step(step: int, hp: dict[str, Any]) -> bool:
    return (step - 1) % int(hp["inverse_every"]) == 0


def assign_owners(costs: list[float], size: int) -> list[int]:
    """Which rank inverts each layer's factors: greedy by cost (n^3), the costliest first,
    each to the least-loaded rank (ties: the layer order, then the lower rank)."""
    load, owner = [0.0] * size, [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        r = min(range(size), key=lambda j: load[j])
        owner[i], load[r] = r, load[r] + costs[i]
    return owner

"""K-FAC / SP-NGD (Osawa et al. CVPR 2019, SP-NGD 2020; code: chainerkfac, kfac-pytorch;
METHODS.md section 7).

Per Conv/Linear layer: A = E[a a^T] over the rows of the input (Conv: im2col patches; a bias adds
a constant 1) and G = E[(N d)(N d)^T] over the same rows, d = gradient of the micro-batch mean
loss w.r.t. the layer output; both averaged over the micro-batches of a step and over ranks.
Damping by traces: r = max(weight_decay, damping); pi = sqrt((tr A / dim A) / (tr G / dim G));
preconditioned gradient = (G + sqrt(r)/pi I)^-1 grad (A + pi sqrt(r) I)^-1 (Cholesky);
[lbbench] pi = 1 when one factor's mean trace is below 1e-12 of the other's (a zero factor). BN:
unit-wise 2x2 Fisher per channel (SP-NGD) or the plain gradient. Inversions are assigned to ranks
greedily by n^3 cost; owners precondition their layers and one allreduce shares the results.
Momentum with the LR inside; mu scaled by lr_t / lr_{t-1} when the LR drops; optional KL-clip.

[lbbench] choices: factor statistics ``stat_decay`` = weight of the new statistics (1 = fresh
every step, as METHODS.md); weight decay added to the gradient before preconditioning;
Conv rows are the N x L output locations (A and G both averaged over them); the SP-NGD
stale-statistics rule is not implemented (``factor_every`` / ``inverse_every`` instead).
"""
from lbbench.methods.registry import HParam, MethodInfo, open_keys, register

KFAC = register(MethodInfo(
    name="kfac", doc=__doc__, opt_name="kfac", mllog_keys=open_keys("kfac_opt"), needs_local_grads=False,
    hparams={"momentum": HParam(0.9, float, "mu (LR inside)"),
             "weight_decay": HParam(1e-4, float, "beta, added to the gradient; also floors the damping"),
             "exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases"),
             "damping": HParam(1e-3, float, "Tikhonov damping before the trace split"),
             "stat_decay": HParam(1.0, float, "weight of fresh factor statistics (1 = no running average)"),
             "factor_every": HParam(10, int, "steps between factor updates (kfac-pytorch's ImageNet example)"),
             "inverse_every": HParam(100, int, "steps between inversions (kfac-pytorch's ImageNet example)"),
             "bn_fisher": HParam("unit_wise", str, "BatchNorm preconditioning", choices=("unit_wise", "none")),
             "kl_clip": HParam(0.0, float, "KL-clip kappa (0: off)"),
             "momentum_adjust": HParam(True, bool, "scale mu by lr_t / lr_{t-1} when the LR drops")},
    lbbench_choices=("stat_decay = weight of new statistics", "weight decay before preconditioning",
                     "conv rows = output locations", "no stale-statistics rule"),
))

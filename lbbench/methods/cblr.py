"""CBLR: curvature-based per-parameter learning rates (Gao & Zhong; docs/methods.md section 6).

eta_i = lr R_i with the curvature radius R_i = |(1 + g_i^2)^(3/2) / H_ii|; update
v <- mu v + eta (g + beta w), w <- w - v (momentum with the LR inside, as LARS); excluded tensors
(BN, biases) take plain momentum SGD.

[lbbench] choices, because the seed leaves H_ii uncomputed:
- The estimate: Hutchinson's z * (H z) with Rademacher probes seeded by (seed, step, virtual
  worker), ``hutchinson_samples`` probes per virtual worker, Hessian-vector products by double
  backward on every micro-batch of a refresh step (every ``curvature_every`` steps), averaged
  over micro-batches and ranks (so it does not depend on how K splits into np x accum), then an
  exponential average over refreshes (``curvature_ema`` = the new estimate's weight).
- Measured on the demo network (resnet_tiny on digits, after 30 SGD steps; exact diagonal by
  unit-vector Hessian products on 40 coordinates per weight tensor, tests/methods/test_cblr.py
  holds the estimator to the exact diagonal): every |H_ii| is below 1 (median 2e-3), and the
  diagonal is dominated by off-diagonal terms, so one probe overestimates |H_ii| 12x (median
  relative error 12); 4 / 16 / 64 probes: 6.6 / 2.7 / 1.4. The defaults (4 probes per virtual
  worker, averaged over K >= 2 virtual workers and about 10 refreshes: ~80 probes) bring the
  median error of |H_ii| to ~1.4 and of the floored radius R_i to ~0.6.
- The floor: |H_ii| is clamped below at ``curvature_floor`` x the tensor's mean |H_jj| (0.1:
  no parameter's rate exceeds 10x the tensor's typical 1/|H|). A floor relative to the tensor
  keeps the method (rates still vary as 1/|H_ii| within and across tensors) while bounding the
  steps that a noisy near-zero estimate would make huge; an absolute floor of 1 (the first
  version) exceeded every |H_ii| of the network and turned CBLR into momentum SGD.
- A tensor whose estimate is all zero (a conv feeding a zero-initialised BN gamma, at the first
  refresh) takes plain momentum SGD until the next refresh: its radius is undefined.
- Rates ~ 1/|H| are large (hundreds here): CBLR's LR is of the order of a Newton step's
  fraction (1e-3 to 1e-2 on the demo), not SGD's.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lbbench.methods.registry import BadHParam, HParam, MethodInfo, open_keys, register


def _check(hp: dict[str, Any]) -> dict[str, Any]:
    if hp["hutchinson_samples"] < 1:
        raise BadHParam("hutchinson_samples", "cblr.hutchinson_samples must be >= 1")
    if not 0 < hp["curvature_ema"] <= 1:
        raise BadHParam("curvature_ema", "cblr.curvature_ema must be in (0, 1]")
    if not 0 < hp["curvature_floor"] <= 1:
        raise BadHParam("curvature_floor", "cblr.curvature_floor must be in (0, 1]")
    return hp


CBLR = register(
    MethodInfo(
        name="cblr",
        doc=__doc__,
        opt_name="cblr",
        mllog_keys=open_keys("cblr_opt"),
        step="curvature",
        passes_per_step=1,
        hparams={
            "momentum": HParam(0.9, float, "mu"),
            "weight_decay": HParam(1e-4, float, "beta"),
            "exclude_bn_bias": HParam(True, bool, "plain momentum SGD on BN and biases"),
            "curvature_every": HParam(10, int, "steps between Hessian-diagonal refreshes"),
            "hutchinson_samples": HParam(4, int, "Rademacher probes per virtual worker per refresh"),
            "curvature_ema": HParam(0.1, float, "weight of a refresh's estimate in the running average (1: none)"),
            "curvature_floor": HParam(0.1, float, "|H_ii| clamped below at this x the tensor's mean |H_jj|"),
        },
        finalize=_check,
        lbbench_choices=(
            "Hutchinson diagonal by double backward, averaged over virtual workers and refreshes",
            "LR inside momentum",
            "|H_ii| floor relative to the tensor's mean",
            "plain momentum SGD while a tensor's curvature estimate is zero",
        ),
    )
)


def is_curvature_step(step: int, hp: dict[str, Any]) -> bool:
    """Steps (1-based) that refresh the Hessian-diagonal estimate: 1, 1 + every, ..."""
    return (step - 1) % int(hp["curvature_every"]) == 0


def probe_rng(seed: int, step: int, virtual_worker: int) -> np.random.Generator:
    """The probes of one virtual worker in one step: the same whatever np x accum split K."""
    return np.random.default_rng([seed, step, virtual_worker])


def rademacher(rng: np.random.Generator, shapes: list[tuple[int, ...]]) -> list[NDArray[Any]]:
    """One probe per tensor, +-1, from NumPy's generator: both backends draw the same probes
    for the same (seed, step, virtual worker), so CBLR is comparable across frameworks."""
    return [rng.integers(0, 2, tuple(s)).astype(np.float32) * 2 - 1 for s in shapes]

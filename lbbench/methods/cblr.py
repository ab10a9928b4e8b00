"""CBLR: curvature-based per-parameter learning rates (Gao & Zhong; docs/methods.md section 6).

eta_i = lr R_i with the curvature radius R_i = |(1 + g_i^2)^(3/2) / H_ii|; update
v <- mu v + eta (g + beta w), w <- w - v. [lbbench] choices: H_ii (left uncomputed by the seed)
is Hutchinson's estimate z * (H z) with Rademacher z seeded by (seed, step, virtual worker),
Hessian-vector products by double backward on every micro-batch of a refresh step, averaged
over micro-batches and ranks (so it does not depend on how K splits into np x accum), refreshed every
``curvature_every`` steps, |H_ii| clamped below at ``curvature_floor``; momentum with the LR
inside (as LARS); excluded tensors (BN, biases) take plain momentum SGD.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lbbench.methods.registry import HParam, MethodInfo, open_keys, register

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
            "hutchinson_samples": HParam(1, int, "Rademacher probes per refresh"),
            "curvature_floor": HParam(1.0, float, "lower clamp of |H_ii| (bounds R_i)"),
        },
        lbbench_choices=("Hutchinson diagonal by double backward", "LR inside momentum", "|H_ii| floor"),
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

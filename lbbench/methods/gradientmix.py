"""GradientMix: a random convex combination of the K virtual workers' gradients
(docs/methods.md section 4). [lbbench] The paper's mixing distribution was not available; lbbench
defines it: c ~ Dirichlet(alpha, ..., alpha), drawn afresh every step from (seed, step), so
every rank draws the same c without communication; E[c_k] = 1/K keeps the expected update;
alpha -> infinity is plain averaging; K = 2 is mixup's Beta(alpha, alpha).

Optimizer-agnostic: micro-batch k's loss is scaled by K c_k before backward and Horovod's
Average is kept, so the mixed gradient costs nothing extra; any other method receives it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lbbench.methods.registry import REGISTRY, BadHParam, HParam, MethodInfo, get_method, register, resolve_hparams


def mix_weights(seed: int, step: int, k: int, alpha: float) -> NDArray[Any]:
    """The step's Dirichlet weights; a function of (seed, step) only, hence equal on every rank."""
    return np.random.default_rng([seed, step, 0x6D6978]).dirichlet([alpha] * k)


def _finalize(hp: dict[str, Any]) -> dict[str, Any]:
    base = hp["base"]
    if base not in REGISTRY or not REGISTRY[base].is_plain_optimizer:
        plain = sorted(n for n, m in REGISTRY.items() if m.is_plain_optimizer)
        raise BadHParam(
            "base",
            f"gradientmix.base must be a method with the standard step and its own update "
            f"rule ({', '.join(plain)}), got {base!r}",
        )
    try:
        hp["base_hparams"] = resolve_hparams(base, hp["base_hparams"])
    except BadHParam as e:
        raise BadHParam("base_hparams", str(e)) from None
    if hp["alpha"] <= 0:
        raise BadHParam("alpha", "gradientmix.alpha must be > 0")
    return hp


def _keys(hp: dict[str, Any], sched: dict[str, Any]) -> dict[str, Any]:
    base = get_method(hp["base"])
    out = {
        "gradientmix_alpha": hp["alpha"],
        "gradientmix_base": hp["base"],
        "gradientmix_start_epoch": hp["start_epoch"],
        "gradientmix_end_epoch": hp["end_epoch"],
    }
    out.update(base.mllog_keys(hp["base_hparams"], sched))
    return out


def loss_weight(hp: dict[str, Any], seed: int, step: int, epoch: int, k: int, K: int) -> float:
    """Virtual worker k's loss weight in a step: K c_k inside [start_epoch, end_epoch], else 1
    (Horovod's Average over the K weighted gradients then gives sum_k c_k g_k)."""
    if epoch < hp["start_epoch"] or (hp["end_epoch"] and epoch > hp["end_epoch"]):
        return 1.0
    return float(K * mix_weights(seed, step, K, hp["alpha"])[k])


GRADIENTMIX = register(
    MethodInfo(
        name="gradientmix",
        doc=__doc__,
        opt_name="gradientmix",
        mllog_keys=_keys,
        finalize=_finalize,
        needs_local_grads=True,
        loss_weight=loss_weight,
        update=lambda hp: (hp["base"], hp["base_hparams"]),
        hparams={
            "base": HParam("sgd", str, "the optimizer method that receives the mixed gradient"),
            "base_hparams": HParam({}, dict, "that method's hyperparameters"),
            "alpha": HParam(1.0, float, "Dirichlet concentration (large = plain averaging)"),
            "start_epoch": HParam(1, int, "first epoch with mixing (1-based)"),
            "end_epoch": HParam(0, int, "last epoch with mixing; 0 = until the end"),
        },
        lbbench_choices=("Dirichlet(alpha) mixing weights from (seed, step)",),
    )
)

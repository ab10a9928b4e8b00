"""EXTRAP-SGD (Lin, Kong, Stich, Jaggi, ICML 2020; docs/methods.md section 5).

Per virtual worker k, with the shared momentum buffer u:
  g_k = grad f(w; xi_k) (local, not allreduced);  w~_k = w - gamma_x (mu u + g_k)
  h_k = grad f(w~_k; xi_k);  h = mean_k h_k (the only allreduce)
  u <- mu u + (h + beta w);  w <- w - gamma_t (mu u + h + beta w)     (Nesterov, original w)
gamma_x = extrap_scale * gamma_t (1 by default; 0 reduces to Nesterov SGD exactly). BN running
statistics update only in the second pass. Under accumulation every micro-batch extrapolates
from the same w (saved and restored). [lbbench] choices: weight decay beta added to h as in
SGD (not on excluded tensors); the second gradient uses the same micro-batch; the perturbation
may instead be noise (w~ = w + N(0, s^2) or U(-s, s)), the unified framework's SmoothOut-like
case.
"""

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lbbench.methods.registry import HParam, MethodInfo, open_keys, register


def sgd_rule(hp: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The update after the extrapolated gradient: Nesterov momentum SGD, LR outside."""
    return "sgd", dict(
        momentum=hp["momentum"],
        nesterov=True,
        weight_decay=hp["weight_decay"],
        exclude_bn_bias=hp["exclude_bn_bias"],
        lr_convention="outside",
    )


def noise_rng(seed: int, step: int, virtual_worker: int) -> np.random.Generator:
    """The perturbation of one virtual worker in one step (NumPy, so both backends draw the same
    noise): a function of (seed, step, virtual worker), so the noise is the same whatever np x
    accum split K, and a resumed run needs no generator state."""
    return np.random.default_rng([seed, step, virtual_worker, 0x657870])


def draw_noise(rng: np.random.Generator, shapes: list[tuple[int, ...]], kind: str, scale: float) -> list[NDArray[Any]]:
    """One perturbation per tensor, in the given order and PyTorch's weight layout (the
    TensorFlow backend transposes): N(0, scale^2) or U(-scale, scale), float32."""
    if kind == "gaussian":
        return [rng.standard_normal(s).astype(np.float32) * scale for s in shapes]
    return [(rng.random(s).astype(np.float32) * 2 - 1) * scale for s in shapes]


EXTRAP_SGD = register(
    MethodInfo(
        name="extrap_sgd",
        doc=__doc__,
        opt_name="extrap_sgd",
        mllog_keys=open_keys("extrap_sgd_opt"),
        step="extrap",
        update=sgd_rule,
        needs_local_grads=True,
        passes_per_step=2,
        hparams={
            "momentum": HParam(0.9, float, "mu"),
            "weight_decay": HParam(1e-4, float, "beta, added to h"),
            "exclude_bn_bias": HParam(True, bool, "no weight decay on BN and biases"),
            "extrap_scale": HParam(1.0, float, "gamma_x / gamma_t"),
            "perturbation": HParam(
                "extragradient", str, "how w~ is formed", choices=("extragradient", "gaussian", "uniform")
            ),
            "noise_scale": HParam(0.0, float, "std (gaussian) or half-width (uniform) of the noise"),
        },
        lbbench_choices=("weight decay added to h", "same micro-batch for both gradients"),
    )
)

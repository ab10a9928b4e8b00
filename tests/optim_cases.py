"""The cases both backends' update rules are held to the NumPy formulas with
(tests/methods/test_exact_formulas.py for PyTorch, tests/backends/tf/test_optim.py for TensorFlow):
several steps at a varying LR, with an excluded tensor, a zero-norm weight and a zero gradient."""

from __future__ import annotations

import numpy as np

# Non-default hyperparameters, so the test exercises them (Nesterov, weight decay, eps, ...).
VARIANTS = {
    "sgd": [{}, {"nesterov": True, "lr_convention": "inside"}, {"nesterov": True}],
    "lars": [{}, {"nesterov": True, "eps": 1e-3, "weight_decay": 5e-4}],
    "lamb": [{}, {"clamp": 0.5, "bias_correction": False}],
    "mclr": [{}, {"weight_decay": 1e-2}],
    "percentdelta": [{}, {"momentum": 0.9, "weight_decay": 1e-3}],
    "adam": [{"weight_decay": 1e-2}],
    "adamw": [{}],
    "adagrad": [{"weight_decay": 1e-3, "initial_accumulator": 0.1}],
    "rmsprop": [{"momentum": 0.9, "weight_decay": 1e-3}],
}
LRS = [0.05, 0.2, 0.1, 0.01, 0.3]


def case(seed: int = 0) -> tuple[list[tuple[np.ndarray, bool]], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    shapes = [((6, 5), False), ((6,), True), ((3, 4), False), ((4,), False)]
    params = [(rng.normal(size=s), excl) for s, excl in shapes]
    params[2] = (np.zeros((3, 4)), False)  # zero-norm weight: ratio 1 branch
    grads = [[rng.normal(size=s) for s, _ in shapes] for _ in LRS]
    for g in grads:
        g[3] = np.zeros(4)  # zero gradient: ratio 1 branch
    return params, grads


def variant_ids() -> list[tuple[str, dict]]:
    return [(m, v) for m, vs in VARIANTS.items() for v in vs]

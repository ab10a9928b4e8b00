"""Every optimizer method against the independent NumPy formula (tests/reference_numpy.py):
several steps at a varying LR, with an excluded tensor, a zero-norm weight and a zero gradient."""

from __future__ import annotations

import numpy as np
import pytest

from lbbench.methods import REGISTRY, resolve_hparams

from optim_cases import LRS, VARIANTS, case
from reference_numpy import REFERENCES, kwargs_for

torch = pytest.importorskip("torch")
from lbbench.backends.torch.optim import RULES  # noqa: E402


def test_every_optimizer_method_has_a_reference_and_a_torch_builder():
    optimizers = {n for n in REGISTRY if n not in ("gradientmix", "extrap_sgd", "kfac", "cblr")}
    assert optimizers <= set(REFERENCES) and optimizers <= set(RULES)


@pytest.mark.parametrize(
    "method,variant",
    [(m, v) for m, vs in VARIANTS.items() for v in vs],
    ids=[f"{m}-{i}" for m, vs in VARIANTS.items() for i in range(len(vs))],
)
def test_matches_numpy_formula(method, variant):
    hp = resolve_hparams(method, variant)
    params, grads = case()
    ref_params = [(w.copy(), e) for w, e in params]
    tparams = [torch.nn.Parameter(torch.tensor(w)) for w, _ in params]
    groups = [
        {"params": [p for p, (_, e) in zip(tparams, params) if e == flag], "excluded": flag} for flag in (False, True)
    ]
    opt = RULES[method](groups, hp, LRS[0])
    ref, state = REFERENCES[method][0], {}
    for lr, g in zip(LRS, grads):
        for p, gi in zip(tparams, g):
            p.grad = torch.tensor(gi)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        ref(ref_params, g, lr, state, **kwargs_for(method, hp))
    for p, (w, _) in zip(tparams, ref_params):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-10, atol=1e-12)


def test_lamb_matches_torch_optimizer_where_documented_behaviour_coincides():
    """torch-optimizer's Lamb: no bias correction and ||w|| clamped at 10; with bias correction
    off in ours and its clamp out of reach, one parameter group, the two must agree."""
    torch_optimizer = pytest.importorskip("torch_optimizer")
    torch.manual_seed(0)
    w0 = [torch.randn(5, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    ours = [torch.nn.Parameter(w.clone()) for w in w0]
    theirs = [torch.nn.Parameter(w.clone()) for w in w0]
    from lbbench.backends.torch.optim.lamb import build

    hp = resolve_hparams("lamb", {"bias_correction": False, "weight_decay": 0.01, "exclude_bn_bias": False})
    a = build([{"params": ours, "excluded": False}], hp, 0.1)
    b = torch_optimizer.Lamb(theirs, lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, clamp_value=1e9)
    for _ in range(4):
        g = [torch.randn_like(w) for w in w0]
        for p, q, gi in zip(ours, theirs, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)

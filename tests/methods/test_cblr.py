"""CBLR: Hutchinson's diagonal against the exact Hessian diagonal, and the update against the
NumPy formula given that diagonal."""

from __future__ import annotations

import numpy as np
import pytest

from lbbench.methods import resolve_hparams

from reference_numpy import cblr as cblr_ref

torch = pytest.importorskip("torch")
from lbbench.backends.torch.optim.cblr import build, hutchinson_diag  # noqa: E402


def _quadratic(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = m @ m.T + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return A, b


def test_hutchinson_matches_the_exact_hessian_diagonal_of_a_quadratic():
    A, b = _quadratic()
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    f = lambda x: 0.5 * x @ A @ x + b @ x
    exact = torch.autograd.functional.hessian(f, w.detach()).diagonal()
    assert torch.allclose(exact, A.diagonal())
    (grad,) = torch.autograd.grad(f(w), [w], create_graph=True)
    (est,) = hutchinson_diag([grad], [w], samples=20000, rng=np.random.default_rng(1))
    off = (A - torch.diag(A.diagonal())).pow(2).sum(1).sqrt()  # per-entry std of one probe
    assert torch.all((est - exact).abs() < 5 * off / 20000**0.5), (est, exact)
    D = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))  # diagonal: exact in 1 probe
    v = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (gd,) = torch.autograd.grad(0.5 * v @ D @ v, [v], create_graph=True)
    (one,) = hutchinson_diag([gd], [v], samples=1, rng=np.random.default_rng(0))
    assert torch.equal(one, D.diagonal())


def test_cblr_update_matches_numpy_formula():
    """The relative floor, a tensor with an all-zero estimate (plain momentum SGD), an excluded
    tensor, and the running average over two refreshes, against the formula."""
    rng = np.random.default_rng(0)
    hp = resolve_hparams("cblr", {"curvature_floor": 0.5, "curvature_ema": 0.25})
    shapes = [((4, 3), False), ((3,), True), ((2, 2), False)]
    params = [(rng.normal(size=s), e) for s, e in shapes]
    h1 = [rng.normal(size=s) * 2 for s, _ in shapes]
    h2 = [rng.normal(size=s) * 2 for s, _ in shapes]
    h1[2], h2[2] = np.zeros((2, 2)), np.zeros((2, 2))
    expected_h = [0.75 * a + 0.25 * b for a, b in zip(h1, h2)]
    ref = [(w.copy(), e) for w, e in params]
    tp = [torch.nn.Parameter(torch.tensor(w)) for w, _ in params]
    opt = build([{"params": [tp[0], tp[2]], "excluded": False}, {"params": [tp[1]], "excluded": True}], hp, 0.1)
    opt.set_curvature(tp, [torch.tensor(h) for h in h1])
    opt.set_curvature(tp, [torch.tensor(h) for h in h2])
    state = {}
    for lr in (0.1, 0.05, 0.2):
        grads = [rng.normal(size=s) for s, _ in shapes]
        for p, g in zip(tp, grads):
            p.grad = torch.tensor(g)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        cblr_ref(ref, grads, lr, state, expected_h, mu=hp["momentum"], wd=hp["weight_decay"], floor=0.5)
    for p, (w, _) in zip(tp, ref):
        np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12)


def test_estimator_is_unbiased_for_a_real_network():
    """Hutchinson's estimate on a small conv net against the exact Hessian diagonal (one
    unit-vector Hessian product per coordinate, by brute force): the mean over many probes is
    within 5 standard errors of the exact value, coordinate by coordinate."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4)
    ).double()
    x, y = torch.randn(16, 2, 4, 4, dtype=torch.float64), torch.randint(0, 4, (16,))
    params = list(net.parameters())
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(x), y), [params[0]], create_graph=True)
    flat = params[0].numel()
    exact = torch.stack(
        [
            torch.autograd.grad(
                g, [params[0]], grad_outputs=torch.eye(flat, dtype=torch.float64)[j].view_as(g), retain_graph=True
            )[0].reshape(-1)[j]
            for j in range(flat)
        ]
    )
    n = 4000
    rng = np.random.default_rng(1)
    draws = torch.stack([hutchinson_diag([g], [params[0]], 1, rng)[0].reshape(-1) for _ in range(n)])
    mean, se = draws.mean(0), draws.std(0) / n**0.5
    assert torch.all((mean - exact).abs() < 5 * se + 1e-12), float(((mean - exact).abs() / se).max())

"""K-FAC: factors and the preconditioned gradient of one Linear layer against a dense
Kronecker solve in NumPy; factors from 2 Horovod ranks against 1 rank of the same global batch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lbbench.methods import resolve_hparams

from helpers import run_single, run_worker, small_spec

torch = pytest.importorskip("torch")
from lbbench.backends.torch.kfac import KFACPreconditioner, damped_inverses  # noqa: E402


def _numpy_reference(x, y, W, b, damping, wd):
    """Everything from the formulas: softmax-CE gradient, factors, trace-split damping, and
    ((A + pi s I) kron (G + s/pi I))^-1 vec(grad) by a dense solve."""
    N = x.shape[0]
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(W.shape[0])[y]) / N  # dL/dz of the mean loss
    a = np.hstack([x, np.ones((N, 1))])
    A = a.T @ a / N
    G = (N * d).T @ (N * d) / N
    grad = np.hstack([d.T @ x + wd * W, d.sum(0)[:, None]])  # [dW + wd W | db]
    r = max(wd, damping)
    pi = math.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    Ad = A + pi * math.sqrt(r) * np.eye(A.shape[0])
    Gd = G + math.sqrt(r) / pi * np.eye(G.shape[0])
    vec = np.linalg.solve(np.kron(Ad, Gd), grad.flatten(order="F"))  # column-major vec
    return A, G, vec.reshape(grad.shape, order="F")


def test_linear_layer_preconditioned_gradient_is_the_dense_kronecker_solve():
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3).double()
    x = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    hp = resolve_hparams("kfac", {"damping": 0.05, "weight_decay": 1e-3})
    pre = KFACPreconditioner(layer, hp, rank=0, size=1)
    pre.begin(capture=True, scale=0.5)  # as under accumulation 2: the hook undoes it
    (torch.nn.functional.cross_entropy(layer(x), y) * 0.5).backward()
    for p in layer.parameters():
        p.grad.mul_(2.0)  # the allreduced gradient of the mean loss
    pre.reduce(hvd=None)
    pre.invert()
    pre.precondition(hvd=None, lr=0.1)
    A, G, P = _numpy_reference(
        x.numpy(), y.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), 0.05, 1e-3
    )
    np.testing.assert_allclose(pre.A[layer].numpy(), A, rtol=1e-10)
    np.testing.assert_allclose(pre.G[layer].numpy(), G, rtol=1e-10)
    got = np.hstack([layer.weight.grad.numpy(), layer.bias.grad.numpy()[:, None]])
    np.testing.assert_allclose(got, P, rtol=1e-8, atol=1e-12)


def test_damped_inverses_split_the_damping_by_traces():
    A = torch.diag(torch.tensor([4.0, 2.0], dtype=torch.float64))
    G = torch.diag(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    Ainv, Ginv = damped_inverses(A, G, damping=0.01, weight_decay=0.04)  # r = 0.04, sqrt = 0.2
    pi = math.sqrt(3.0 / 1.0)
    assert torch.allclose(Ainv.diagonal(), 1 / (torch.tensor([4.0, 2.0], dtype=torch.float64) + pi * 0.2))
    assert torch.allclose(Ginv.diagonal(), torch.full((3,), 1 / (1 + 0.2 / pi), dtype=torch.float64))


@pytest.mark.slow
def test_factors_from_two_ranks_equal_one_rank_same_global_batch(tmp_path, digits_dir):
    two = small_spec(tmp_path, digits_dir, "kfac", "{damping: 0.01}", np=2, accum=1)
    one = small_spec(tmp_path, digits_dir, "kfac", "{damping: 0.01}", np=1, accum=2)
    run_worker(two, tmp_path / "np2")
    run_single(one, tmp_path / "np1")
    f2, f1 = torch.load(tmp_path / "np2" / "kfac_factors.pt"), torch.load(tmp_path / "np1" / "kfac_factors.pt")
    assert len(f2["A"]) == len(f1["A"]) > 5 and len(f2["F"]) > 5
    for key in ("A", "G", "F"):
        for a, b in zip(f2[key], f1[key]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_a_zero_factor_falls_back_to_an_even_damping_split():
    A = torch.eye(3, dtype=torch.float64)
    for tiny in (0.0, 1e-40):
        G = torch.eye(2, dtype=torch.float64) * tiny
        Ainv, Ginv = damped_inverses(A, G, damping=0.01, weight_decay=0.0)
        assert torch.allclose(Ginv, torch.eye(2, dtype=torch.float64) / (tiny + 0.1))
        assert torch.allclose(Ainv, torch.eye(3, dtype=torch.float64) / 1.1)

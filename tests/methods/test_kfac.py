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


def _patches(x: np.ndarray, k: int, pad: int) -> np.ndarray:
    """im2col by explicit loops: rows (n, output location) x (c, kh, kw), PyTorch's weight order."""
    n, _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = [xp[i, :, r : r + k, s : s + k].reshape(-1) for i in range(n) for r in range(h) for s in range(w)]
    return np.array(rows)


def test_conv_factors_and_preconditioned_gradient_by_brute_force():
    """A = (1/N) sum over samples and output locations of the patch outer products (a bias adds
    a 1), G = (1/(N L)) sum of the per-sample output-gradient outer products; the preconditioned
    gradient is the dense Kronecker solve with the trace-split damping."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    r = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    hp = resolve_hparams("kfac", {"damping": 0.03, "weight_decay": 1e-3})
    pre = KFACPreconditioner(conv, hp, rank=0, size=1)
    pre.begin(capture=True, scale=1.0)
    out = conv(x)
    ((out * r).sum() / 5 + 0.5 * (out**2).mean()).backward()
    pre.reduce(hvd=None)
    N, L = 5, 16
    a = np.hstack([_patches(x.numpy(), 3, 1), np.ones((N * L, 1))])
    A = a.T @ a / N
    y = conv(x).detach().numpy()
    d = (r.numpy() / N + y / (N * 3 * L)).transpose(0, 2, 3, 1).reshape(-1, 3)  # dLoss/dy, (n, l) rows
    G = (N * d).T @ (N * d) / (N * L)
    np.testing.assert_allclose(pre.A[conv].numpy(), A, rtol=1e-10)
    np.testing.assert_allclose(pre.G[conv].numpy(), G, rtol=1e-10)
    W = conv.weight.detach().numpy().reshape(3, -1)
    grad = np.hstack([conv.weight.grad.numpy().reshape(3, -1) + 1e-3 * W, conv.bias.grad.numpy()[:, None]])
    pre.invert()
    pre.precondition(hvd=None, lr=0.1)
    rr = max(1e-3, 0.03)
    pi = math.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
    Ad, Gd = A + pi * math.sqrt(rr) * np.eye(A.shape[0]), G + math.sqrt(rr) / pi * np.eye(3)
    P = np.linalg.solve(np.kron(Ad, Gd), grad.flatten(order="F")).reshape(grad.shape, order="F")
    got = np.hstack([conv.weight.grad.numpy().reshape(3, -1), conv.bias.grad.numpy()[:, None]])
    np.testing.assert_allclose(got, P, rtol=1e-8, atol=1e-12)


def test_conv_factor_scale_matches_the_empirical_fisher():
    """Where the KFC approximation is exact in expectation - a 1x1 conv whose inputs are nonzero
    at one output location per sample, and a loss linear in the outputs with coefficients
    independent of the inputs - A (x) G must equal the empirical Fisher of the per-sample
    gradients. Averaging A over the L = 16 locations as well (lbbench's first version) makes it
    16x too small."""
    rng = np.random.default_rng(0)
    N, C, H, W, O = 4000, 3, 4, 4, 2
    x = np.zeros((N, C, H, W))
    where = rng.integers(0, H * W, N)
    x[np.arange(N), :, where // W, where % W] = rng.normal(size=(N, C))
    r = rng.normal(size=(N, O, H, W))
    conv = torch.nn.Conv2d(C, O, 1, bias=False).double()
    pre = KFACPreconditioner(conv, resolve_hparams("kfac", {}), rank=0, size=1)
    pre.begin(capture=True, scale=1.0)
    ((conv(torch.tensor(x)) * torch.tensor(r)).sum() / N).backward()
    pre.reduce(hvd=None)
    kfac = np.kron(pre.A[conv].numpy(), pre.G[conv].numpy())
    # per-sample gradient of l_n = sum_l <r_nl, out_nl>: sum_l r_nl a_nl^T; vec column-major = a (x) r
    per = np.einsum("nchw,nohw->nco", x, r).reshape(N, -1)  # index (c, o): a_c r_o = kron(a, r)
    fisher = per.T @ per / N
    assert np.linalg.norm(kfac - fisher) / np.linalg.norm(fisher) < 0.1


def test_bn_unit_wise_fisher_is_the_mean_outer_product_of_per_sample_gradients():
    """Per channel, F = (1/N) sum_n [dl_n/dgamma, dl_n/dbeta]^T [...], the per-sample gradients
    taken one sample at a time by autograd on the training forward (batch statistics)."""
    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(3).double()
    head = torch.nn.Linear(3 * 2 * 2, 4).double()
    x, y = torch.randn(6, 3, 2, 2, dtype=torch.float64), torch.randint(0, 4, (6,))
    hp = resolve_hparams("kfac", {"bn_fisher": "unit_wise"})
    pre = KFACPreconditioner(torch.nn.Sequential(bn, torch.nn.Flatten(), head), hp, rank=0, size=1)
    pre.begin(capture=True, scale=1.0)
    torch.nn.functional.cross_entropy(head(bn(x).flatten(1)), y).backward()
    pre.reduce(hvd=None)
    per = []
    for n in range(6):
        loss_n = torch.nn.functional.cross_entropy(head(bn(x).flatten(1))[n : n + 1], y[n : n + 1])
        gg, gb = torch.autograd.grad(loss_n, [bn.weight, bn.bias])
        per.append(torch.stack([gg, gb], dim=1))  # (C, 2)
    per_t = torch.stack(per)  # (N, C, 2)
    expected = torch.einsum("nci,ncj->cij", per_t, per_t) / 6
    torch.testing.assert_close(pre.F[bn], expected, rtol=1e-10, atol=1e-14)


def test_factors_are_float32_under_bf16_autocast():
    """Under amp: bf16 the layers compute in bf16; the factors, their inverses and the
    preconditioned gradients must be float32 (bf16 has no Cholesky)."""
    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5),
    )
    pre = KFACPreconditioner(net, resolve_hparams("kfac", {"damping": 0.1}), rank=0, size=1)
    pre.begin(capture=True, scale=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(8, 3, 4, 4))
    torch.nn.functional.cross_entropy(out.float(), torch.randint(0, 5, (8,))).backward()
    pre.reduce(hvd=None)
    pre.invert()
    pre.precondition(hvd=None, lr=0.1)
    assert all(v.dtype == torch.float32 for v in [*pre.A.values(), *pre.G.values(), *pre.F.values()])
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in net.parameters())

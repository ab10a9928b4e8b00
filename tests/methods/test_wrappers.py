"""GradientMix and EXTRAP-SGD: their defining properties (docs/methods.md sections 4 and 5)."""

from __future__ import annotations

import numpy as np
import pytest

from lbbench.methods.gradientmix import mix_weights

from helpers import final_weights, run_single, small_spec


def test_mixed_gradient_is_unbiased_monte_carlo():
    rng = np.random.default_rng(1)
    K, steps = 4, 20000
    g = rng.normal(size=(K, 7))
    mixed = np.stack([mix_weights(0, t, K, 1.0) @ g for t in range(steps)])
    plain = g.mean(axis=0)
    se = mixed.std(axis=0) / np.sqrt(steps)
    assert np.all(np.abs(mixed.mean(axis=0) - plain) < 4 * se)
    assert np.all(mixed.std(axis=0) > 0.05)  # it does mix


def test_mix_weights_are_shared_and_fresh():
    # a function of (seed, step) only: every rank computes the same c with no communication
    assert np.array_equal(mix_weights(3, 10, 8, 0.5), mix_weights(3, 10, 8, 0.5))
    assert not np.array_equal(mix_weights(3, 10, 8, 0.5), mix_weights(3, 11, 8, 0.5))
    c = mix_weights(3, 10, 8, 0.5)
    assert c.shape == (8,) and abs(c.sum() - 1) < 1e-12 and np.all(c >= 0)
    assert np.allclose(mix_weights(0, 5, 4, 1e12), 0.25, atol=1e-5)


@pytest.mark.slow
def test_gradientmix_with_huge_alpha_is_the_plain_method(tmp_path, digits_dir):
    torch = pytest.importorskip("torch")
    plain = small_spec(tmp_path, digits_dir, "lars", "{eta: 0.01}")
    mixed = small_spec(tmp_path, digits_dir, "gradientmix", "{base: lars, base_hparams: {eta: 0.01}, alpha: 1.0e+12}")
    run_single(plain, tmp_path / "plain")
    run_single(mixed, tmp_path / "mixed")
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "mixed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    # and with a small alpha it really differs
    noisy = small_spec(tmp_path, digits_dir, "gradientmix", "{base: lars, base_hparams: {eta: 0.01}, alpha: 0.1}")
    run_single(noisy, tmp_path / "noisy")
    c = final_weights(tmp_path / "noisy")
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-3


@pytest.mark.slow
def test_extrap_sgd_with_zero_extrapolation_is_nesterov_sgd(tmp_path, digits_dir):
    torch = pytest.importorskip("torch")
    nesterov = small_spec(tmp_path, digits_dir, "sgd", "{nesterov: true}")
    extrap = small_spec(tmp_path, digits_dir, "extrap_sgd", "{extrap_scale: 0.0}")
    s_n = run_single(nesterov, tmp_path / "nesterov")
    s_e = run_single(extrap, tmp_path / "extrap")
    a, b = final_weights(tmp_path / "nesterov"), final_weights(tmp_path / "extrap")
    for k in a:  # same gradients at the same points; the 1/accum = 1/2 scaling is exact in binary
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    steps = s_e.steps_run
    assert s_e.backward_passes == 2 * 2 * steps and s_n.backward_passes == 2 * steps  # 2 micro-batches
    assert s_e.allreduces == s_n.allreduces == 0  # one rank: no collective at all
    moved = small_spec(tmp_path, digits_dir, "extrap_sgd", "{}")
    run_single(moved, tmp_path / "moved")
    c = final_weights(tmp_path / "moved")
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-4

"""Diagnostics (docs/methods.md section 9): the noise-scale estimator by hand and by Monte Carlo,
and the per-tensor rows a real run writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lbbench.worker.noise_scale import noise_scale_parts

from helpers import run_single, small_spec


def test_noise_scale_two_micro_batches_by_hand():
    g1, g2 = np.array([1.0, 2.0]), np.array([3.0, -2.0])
    micro = (g1 @ g1 + g2 @ g2) / 2
    avg = (g1 + g2) / 2
    g2_est, trace = noise_scale_parts(micro, avg @ avg, b=1, B=2)
    assert trace == pytest.approx((g1 - g2) @ (g1 - g2) / 2)  # the unbiased variance sum
    assert g2_est == pytest.approx(2 * avg @ avg - micro)
    assert noise_scale_parts(1.0, 1.0, b=8, B=8) is None


def test_noise_scale_recovers_a_known_gradient_and_covariance():
    rng = np.random.default_rng(0)
    G, sigma, b, K = np.array([0.3, -0.1, 0.2]), np.array([1.0, 2.0, 0.5]), 4, 8
    # a micro-batch gradient of b samples has covariance Sigma / b
    ests = []
    for _ in range(4000):
        micro = G + rng.normal(size=(K, 3)) * sigma / np.sqrt(b)
        ests.append(noise_scale_parts(np.mean((micro**2).sum(1)), (micro.mean(0) ** 2).sum(), b, b * K))
    g2, trace = np.mean(ests, axis=0)
    assert g2 == pytest.approx(G @ G, rel=0.05)
    assert trace == pytest.approx((sigma**2).sum(), rel=0.05)


@pytest.mark.slow
def test_run_writes_per_tensor_diagnostics(tmp_path, digits_dir):
    spec = small_spec(tmp_path, digits_dir, "lars", "{eta: 0.01}").model_copy(update={"diag_every": 2}).with_id()
    run_single(spec, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    diag = [r for r in rows if r["kind"] == "diag"]
    assert [r["step"] for r in diag] == [2, 4, 6]
    t = {x["name"]: x for x in diag[0]["tensors"]}
    assert len(t) == len(list(t)) and "fc.weight" in t and "stem.0.weight" in t
    conv = t["stem.0.weight"]
    assert conv["trust_ratio"] is not None and 0 < conv["trust_ratio"] < 1
    assert t["fc.bias"]["trust_ratio"] == 1.0  # excluded tensors: no trust ratio
    assert conv["update_norm"] > 0 and conv["mean_abs_dw"] > 0 and conv["g_norm"] > 0
    assert all(r["noise_trace"] > 0 for r in diag)  # 2 virtual workers measure a spread


@pytest.mark.slow
def test_every_step_kind_measures_the_noise_scale_of_the_raw_gradient(tmp_path, digits_dir):
    """K-FAC measures it before preconditioning and EXTRAP-SGD from each virtual worker's
    gradient at its extrapolated point: at step 1 (the same weights, data and BN for every
    method of a seed) with zero perturbation both equal plain SGD's |G_b|^2 and |G_B|^2, on
    both backends (the backends against each other, from the same weights:
    tests/backends/tf/test_equivalence.py)."""
    methods = {"sgd": "{}", "kfac": "{}", "extrap_sgd": "{perturbation: gaussian, noise_scale: 0.0}"}
    first = {}
    for fw in ("torch", "tf"):
        for m, hp in methods.items():
            spec = small_spec(tmp_path, digits_dir, m, hp).model_copy(update={"diag_every": 1, "framework": fw})
            rdir = tmp_path / f"{fw}-{m}"
            run_single(spec.with_id(), rdir)
            rows = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
            diag = [r for r in rows if r["kind"] == "diag"]
            assert [r["step"] for r in diag] == list(range(1, len(diag) + 1)) and len(diag) >= 5, (fw, m)
            assert all(r["noise_trace"] is not None and r["noise_g2"] is not None for r in diag)
            first[fw, m] = (diag[0]["micro_grad_sq"], diag[0]["global_grad_sq"])
    for fw in ("torch", "tf"):
        for m in ("kfac", "extrap_sgd"):
            assert first[fw, m] == pytest.approx(first[fw, "sgd"], rel=1e-9), (fw, m, first)

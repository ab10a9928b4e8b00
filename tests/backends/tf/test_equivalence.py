"""The TensorFlow backend against the PyTorch one: the same model (weights copied across give
the same logits), every method (the same weights, batches and hyperparameters give the same
parameters after 3 steps), the same Horovod semantics (2 ranks = 1 rank with accumulation 2),
and both frameworks side by side in one suite's report.

Each framework runs in its own process (tests/equiv_worker.py): no process imports both
horovod.torch and TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lbbench.methods import REGISTRY
from lbbench.store.metrics import read_metrics
from lbbench.store.summary import read_summary

from helpers import ROOT, assert_mlperf_compliant, lbbench, run_single, run_worker, spec_from, write_suite

pytestmark = pytest.mark.slow

SUITE = """
name: equiv
workload: {{name: digits, model: {model}, image_size: {size}, classes: {classes},
            data: {{kind: synthetic, train_samples: 4096, eval_samples: 64}}}}
lr: {{rule: constant, base_lr: 0.05, schedule: poly, warmup_epochs: 0}}
matrix:
  methods: [{{name: {method}, hparams: {hparams}}}]
  global_batch: [{batch}]
  workers: [1]
  accum: {accum}
{run}
"""

# Adaptive methods as in the distributed test: a larger eps keeps the sign-of-tiny-gradient
# amplification (lr / eps) out of a test about the formulas.
HPARAMS = {
    "lars": "{eta: 0.01}",
    "gradientmix": "{base: sgd, alpha: 0.5}",
    "adam": "{eps: 1.0e-3}",
    "adamw": "{eps: 1.0e-3}",
    "lamb": "{eps: 0.1}",
    "rmsprop": "{eps: 1.0e-3}",
    "adagrad": "{initial_accumulator: 0.1}",
    "cblr": "{curvature_every: 2}",
    "extrap_sgd": "{}",
    # K-FAC's unit-wise BN Fisher is a 2x2 solve per channel; at damping 0.01 some are
    # near-singular by step 3 and a 1e-6 difference became 4e-2 (without the BN Fisher:
    # 1.3e-6 after 3 steps; at damping 0.1: 3e-7).
    "kfac": "{damping: 0.1}",
}
# Tolerances (relative to each tensor's largest magnitude) after 3 steps. TensorFlow's and
# PyTorch's float32 convolutions sum in different orders (~1e-7 per op); methods that divide
# by a gradient statistic amplify that by up to lr / eps (adaptive), 1 / curvature (cblr),
# or through a median/mean of |g / w| (percentdelta, mclr).
TOLERANCE = {
    "adam": 1e-4,
    "adamw": 1e-4,
    "rmsprop": 1e-4,
    "adagrad": 1e-4,
    "lamb": 1e-4,
    "percentdelta": 1e-4,
    "mclr": 1e-4,
    "cblr": 1e-4,
}


def _equiv(tmp, method, model="resnet_tiny", size=8, classes=10, batch=32, accum=2, steps=3, hparams=None, run=""):
    text = SUITE.format(
        run=run,
        model=model,
        size=size,
        classes=classes,
        method=method,
        batch=batch,
        accum=accum,
        hparams=hparams or HPARAMS.get(method, "{}"),
    )
    spec = spec_from(text, tmp)
    spec.save(tmp / "run.yaml")
    # Weights and batches from the PyTorch model's own initialisation, in the neutral layout.
    src = tmp / "in.npz"
    prep = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import numpy as np, torch
from lbbench.backends.torch.model import build_model, to_canonical
torch.manual_seed(3)
w = to_canonical(build_model({model!r}, {classes}))
rng = np.random.default_rng(4)
# nonzero last-BN gammas and nontrivial running statistics, so every path is exercised
w = [a + rng.normal(0, 0.1, a.shape).astype(np.float32) if a.ndim == 1 else a for a in w]
w = [np.abs(a) + 0.5 if a.ndim == 1 and i % 4 == 0 else a for i, a in enumerate(w)]
n = {max(steps, 1) * accum}
xs = {{f"x{{i}}": rng.standard_normal(({batch} // {accum}, 3, {size}, {size})).astype(np.float32) for i in range(n)}}
ys = {{f"y{{i}}": rng.integers(0, {classes}, {batch} // {accum}) for i in range({max(steps, 1) * accum})}}
np.savez({str(src)!r}, **{{f"w{{i}}": a for i, a in enumerate(w)}}, **xs, **ys)
""",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prep.returncode == 0, prep.stderr
    outs = {}
    for fw in ("torch", "tf"):
        dst = tmp / f"{fw}.npz"
        p = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "equiv_worker.py"),
                fw,
                str(tmp / "run.yaml"),
                str(src),
                str(dst),
                str(steps),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        outs[fw] = np.load(dst)
    return outs["torch"], outs["tf"]


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12))


def test_model_equivalence_tiny_and_resnet50(tmp_path):
    for model, size, classes, batch in (("resnet_tiny", 8, 10, 8), ("resnet50", 224, 1000, 2)):
        d = tmp_path / model
        d.mkdir()
        t, f = _equiv(d, "sgd", model, size, classes, batch=batch, accum=1, steps=0)
        for mode in ("eval_logits", "train_logits"):
            assert _rel(t[mode], f[mode]) < 1e-4, (model, mode, _rel(t[mode], f[mode]))


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_method_equivalence_three_steps(method, tmp_path):
    t, f = _equiv(tmp_path, method)
    _check(t, f, tmp_path, TOLERANCE.get(method, 1e-5))


def test_extrap_sgd_noise_perturbation_is_the_same_noise(tmp_path):
    t, f = _equiv(tmp_path, "extrap_sgd", hparams="{perturbation: gaussian, noise_scale: 0.01}")
    _check(t, f, tmp_path, 1e-5)


@pytest.mark.parametrize("method", ["sgd", "kfac", "extrap_sgd"])
def test_the_noise_scale_rows_agree(method, tmp_path):
    """The gradient-noise-scale parts of every step kind that logs them, torch against tf from
    the same weights and batches (float32: the parts agree as the gradients do)."""
    _equiv(tmp_path, method, run="run: {diag_every: 1}")
    rows = {
        fw: [r for r in read_metrics(tmp_path / f"{fw}.npz.metrics.jsonl") if r["kind"] == "diag"]
        for fw in ("torch", "tf")
    }
    assert [r["step"] for r in rows["torch"]] == [r["step"] for r in rows["tf"]] == [1, 2, 3]
    for t, f in zip(rows["torch"], rows["tf"]):
        for key in ("micro_grad_sq", "global_grad_sq", "noise_g2", "noise_trace"):
            assert f[key] == pytest.approx(t[key], rel=1e-4), (method, t["step"], key, t[key], f[key])


def _check(t, f, tmp_path, tol):
    worst = max(_rel(t[k], f[k]) for k in t.files if k.startswith("w"))
    moved = max(_rel(np.load(tmp_path / "in.npz")[k], t[k]) for k in t.files if k.startswith("w"))
    assert moved > 1e-3, "the steps must move the weights"
    assert worst < tol, worst


DIGITS = """
name: tfdist
workload:
  {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}},
   max_epochs: 1, target_top1: 0.99}}
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix: {{methods: [{{name: lars, hparams: {{eta: 0.01}}}}], global_batch: [256], workers: [{np}], accum: {accum},
          frameworks: [tf]}}
run: {{checkpoint_every: 0, perf: {{precision: float64}}}}
"""


def test_two_tf_ranks_equal_one_rank_with_accumulation(tmp_path, digits_dir):
    two = run_worker(spec_from(DIGITS.format(data=digits_dir, np=2, accum=1), tmp_path), tmp_path / "np2")
    one = run_single(spec_from(DIGITS.format(data=digits_dir, np=1, accum=2), tmp_path), tmp_path / "np1")
    assert two.ranks_agree and len(two.param_digests) == 2
    a, b = np.load(tmp_path / "np2" / "final.npz"), np.load(tmp_path / "np1" / "final.npz")
    # trainable weights only: BN running statistics see micro-batches differently (as in PyTorch);
    # float64, so that only the order of the same sums differs
    for k in (k for k in a.files if k.startswith("w")):
        assert a[k].dtype == np.float64
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12)
    assert two.allreduces == 6 and one.allreduces == 0  # one rank skips the collective
    assert two.backward_passes * 2 == one.backward_passes


def test_suite_runs_both_frameworks_side_by_side(tmp_path, digits_dir):
    suite = write_suite(
        tmp_path / "both.yaml",
        f"""
name: both
workload:
  {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{digits_dir}"}},
   max_epochs: 2, target_top1: 0.99}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix: {{methods: [{{name: sgd}}], global_batch: [64], workers: [2], frameworks: [torch, tf]}}
run: {{diag_every: 20}}
""",
    )
    p = lbbench("run", suite, "--results", tmp_path / "res")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "| sgd | 64 | tf | 2 | 1 | 1 | 1 not_reached |" in p.stdout
    assert "| sgd | 64 | torch | 2 | 1 | 1 | 1 not_reached |" in p.stdout
    res = tmp_path / "res" / "both"
    rdirs = {fw: next(d for d in res.iterdir() if f"-{fw}-" in d.name) for fw in ("torch", "tf")}
    runs = {fw: read_summary(d) for fw, d in rdirs.items()}
    assert runs["tf"].best_top1 == pytest.approx(runs["torch"].best_top1, abs=0.05)
    assert runs["tf"].train_gflop_per_image == pytest.approx(runs["torch"].train_gflop_per_image)
    for fw, rdir in rdirs.items():
        assert_mlperf_compliant(rdir / "mllog.txt")
        kinds = {r["kind"] for r in read_metrics(rdir / "metrics.jsonl")}
        assert kinds == {"step", "epoch", "diag"}, (fw, kinds)
    # A TF run that lost its end resumes from its epoch-1 checkpoint.
    (rdirs["tf"] / "summary.json").unlink()
    p = lbbench("run", suite, "--results", tmp_path / "res", "--only", "*-tf-*")
    assert p.returncode == 0, p.stdout[-3000:]
    again = read_summary(rdirs["tf"])
    assert again.preemptions == 1 and again.epochs_run == 2 and not again.time_to_target_valid
    assert_mlperf_compliant(rdirs["tf"] / "mllog.txt")

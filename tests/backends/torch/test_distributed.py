"""Real Horovod processes (Gloo on CPU): ranks agree, and virtual workers are exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_worker, spec_from

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

SUITE = """
name: dist
workload:
  name: digits
  model: resnet_tiny
  data: {{kind: folder, path: "{data}"}}
  max_epochs: 1
  target_top1: 0.99
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix:
  methods: [{{name: sgd, hparams: {{momentum: 0.9}}}}]
  global_batch: [256]
  workers: [{np}]
  local_batch: 128
run: {{perf: {{precision: float64}}}}
"""


def test_horovod_build_has_both_frameworks_and_controllers():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "horovodrun"), "--check-build"], capture_output=True, text=True, check=True
    ).stdout
    for item in ("TensorFlow", "PyTorch", "MPI", "Gloo"):
        assert f"[X] {item}" in out, out


def test_two_ranks_agree_and_equal_one_rank_with_accumulation(tmp_path, digits_dir):
    two = spec_from(SUITE.format(data=digits_dir, np=2), tmp_path)
    one = spec_from(SUITE.format(data=digits_dir, np=1), tmp_path)
    assert (two.np, two.accum, two.bn_span) == (2, 1, 128) and (one.np, one.accum, one.bn_span) == (1, 2, 128)
    s2 = run_worker(two, tmp_path / "np2")
    s1 = run_worker(one, tmp_path / "np1")
    assert s2.ranks_agree and len(s2.param_digests) == 2
    w2 = torch.load(tmp_path / "np2" / "final.pt")
    w1 = torch.load(tmp_path / "np1" / "final.pt")
    names = [k for k in w2 if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(names) > 20
    for k in names:  # 6 steps of SGD in float64: differences are only the order of float sums
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-9, atol=1e-12, msg=k)
    assert s1.steps_run == s2.steps_run == 6


def test_mpirun_launcher_runs_two_ranks_through_open_mpi(tmp_path, digits_dir):
    spec = spec_from(SUITE.format(data=digits_dir, np=2), tmp_path)
    summary = run_worker(spec, tmp_path / "mpi", launcher="mpirun")
    assert summary.ranks_agree and len(summary.param_digests) == 2
    log = (tmp_path / "mpi" / "mllog.txt").read_text()
    assert log.count('"key": "eval_accuracy"') == 1

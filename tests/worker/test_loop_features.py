"""Training-loop features usable with any method: small-loss discarding and batch-size
schedules (docs/methods.md section 6)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lbbench.worker.batch_schedule import epoch_batch, lr_at, steps_in_epoch
from lbbench.worker.sampling import GlobalBatchSampler, planned_stream
from lbbench.worker.schedules import make_schedule

from helpers import final_weights, run_single, run_worker, spec_from

SUITE = """
name: feat
workload:
  {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}},
   max_epochs: {epochs}, target_top1: 0.999}}
lr: {{rule: constant, base_lr: 0.05, schedule: {schedule}, milestones: [1, 2]}}
matrix:
  methods:
    - name: sgd
      {feature}
  global_batch: [{batch}]
  workers: [{np}]
  local_batch: {local}
"""


def make(tmp, data, feature, np=1, local=128, batch=256, epochs=2, schedule="constant"):
    return spec_from(
        SUITE.format(data=data, feature=feature, np=np, local=local, batch=batch, epochs=epochs, schedule=schedule), tmp
    )


def test_increase_batch_instead_of_decaying_lr(tmp_path, digits_dir):
    spec = make(
        tmp_path,
        digits_dir,
        "batch_schedule: {kind: increase, factor: 2.0}",
        local=64,
        batch=128,
        epochs=3,
        schedule="step",
    )
    assert spec.division == "open"
    assert [epoch_batch(spec, e) for e in (1, 2, 3)] == [(128, 2), (256, 4), (512, 8)]
    assert [steps_in_epoch(spec, e) for e in (1, 2, 3)] == [12, 6, 3]
    sched = make_schedule(spec.lr, spec.steps_per_epoch)
    # the step schedule would give 0.05, 0.005, 0.0005; the LR stays at 0.05 instead
    assert sched.lr_at(13) == pytest.approx(0.005)
    assert lr_at(spec, sched, 2, 1, 13) == pytest.approx(0.05) and lr_at(spec, sched, 3, 3, 21) == pytest.approx(0.05)


def test_small_first_epoch(tmp_path, digits_dir):
    spec = make(
        tmp_path, digits_dir, "batch_schedule: {kind: small_first, first_batch: 128, first_lr: 0.005}", batch=512
    )
    sched = make_schedule(spec.lr, spec.steps_per_epoch)
    assert [epoch_batch(spec, e) for e in (1, 2)] == [(128, 1), (512, 4)]
    assert lr_at(spec, sched, 1, 5, 5) == 0.005 and lr_at(spec, sched, 2, 1, 13) == 0.05


def test_planned_stream_with_a_constant_batch_is_the_plain_stream():
    s = GlobalBatchSampler(100, 32, 4, seed=5)
    a = planned_stream(100, 5, rank=1, np_=2, batch_of=lambda e: (32, 2))
    b = s.stream(1, 2)
    assert all(np.array_equal(next(a), next(b)) for _ in range(30))


def test_bad_batch_schedule_is_located(tmp_path, digits_dir):
    from lbbench.suite import SuiteError

    with pytest.raises(SuiteError, match="first_batch 100 is not divisible"):
        make(tmp_path, digits_dir, "batch_schedule: {kind: small_first, first_batch: 100, first_lr: 0.005}")
    with pytest.raises(SuiteError, match="increase replaces the LR drops"):
        make(tmp_path, digits_dir, "batch_schedule: {kind: increase, factor: 2.0}")


@pytest.mark.slow
def test_discarding_drops_the_fraction_and_is_np_invariant(tmp_path, digits_dir):
    feature = "discard_small_loss: {fraction: 0.25, epochs: 1}"
    two = make(tmp_path, digits_dir, feature, np=2, epochs=2)
    one = make(tmp_path, digits_dir, feature, np=1, epochs=2)
    assert two.discard.scope == "local" and one.virtual_workers == two.virtual_workers == 2
    run_worker(two, tmp_path / "np2")
    run_single(one, tmp_path / "np1")
    rows = [json.loads(x) for x in (tmp_path / "np2" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    # rank 0 counts its own micro-batches: 6 steps x 128 samples x 25%, then nothing in epoch 2
    assert [r["discarded"] for r in epochs] == [6 * 32, 0]
    a, b = final_weights(tmp_path / "np2"), final_weights(tmp_path / "np1")
    import torch

    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    plain = make(tmp_path, digits_dir, "{}".replace("{}", ""), np=1, epochs=2)
    run_single(plain, tmp_path / "plain")
    c = final_weights(tmp_path / "plain")
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-4


@pytest.mark.slow
def test_batch_schedule_run_changes_batch_and_logs_it(tmp_path, digits_dir):
    spec = make(
        tmp_path,
        digits_dir,
        "batch_schedule: {kind: increase, factor: 2.0}",
        np=2,
        local=32,
        batch=128,
        epochs=3,
        schedule="step",
    )
    s = run_worker(spec, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_batch"] for r in rows if r["kind"] == "epoch"] == [128, 256, 512]
    assert s.steps_run == 12 + 6 + 3 and s.samples_run == 12 * 128 + 6 * 256 + 3 * 512
    log = (tmp_path / "run" / "mllog.txt").read_text()
    assert log.count("lbbench_batch_change") == 2
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlperf_logging.compliance_checker",
            "--usage",
            "training",
            "--ruleset",
            "4.0.0",
            str(tmp_path / "run" / "mllog.txt"),
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr

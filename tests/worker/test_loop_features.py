"""Training-loop features usable with any method: small-loss discarding and batch-size
schedules (docs/methods.md section 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lbbench.worker.batch_schedule import epoch_batch, lr_at, steps_in_epoch
from lbbench.worker.sampling import GlobalBatchSampler, planned_stream
from lbbench.worker.schedules import make_schedule

from helpers import assert_mlperf_compliant, final_weights, run_single, run_worker, spec_from

SUITE = """
name: feat
workload:
  {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}},
   max_epochs: {epochs}, target_top1: 0.999}}
lr: {{rule: constant, base_lr: 0.05, schedule: {schedule}, milestones: [1, 2], decay_factor: {decay}}}
matrix:
  methods:
    - name: sgd
      {feature}
  global_batch: [{batch}]
  workers: [{np}]
  local_batch: {local}
  bn_span: {span}
run: {{perf: {{precision: {precision}}}}}
"""


def make(
    tmp,
    data,
    feature,
    np=1,
    local=128,
    batch=256,
    epochs=2,
    schedule="constant",
    decay=0.5,
    span=None,
    precision="float64",
):
    text = SUITE.format(
        data=data,
        feature=feature,
        np=np,
        local=local,
        batch=batch,
        epochs=epochs,
        schedule=schedule,
        decay=decay,
        span=span or local,
        precision=precision,
    )
    return spec_from(text, tmp)


def test_increase_batch_instead_of_decaying_lr(tmp_path, digits_dir):
    spec = make(
        tmp_path, digits_dir, "batch_schedule: {kind: increase}", local=64, batch=128, epochs=3, schedule="step"
    )
    assert spec.division == "open"
    assert [epoch_batch(spec, e) for e in (1, 2, 3)] == [(128, 2), (256, 4), (512, 8)]
    assert [steps_in_epoch(spec, e) for e in (1, 2, 3)] == [12, 6, 3]
    sched = make_schedule(spec.lr, spec.steps_per_epoch)
    # the step schedule would give 0.05, 0.025, 0.0125; the LR stays at 0.05 instead
    assert sched.lr_at(13) == pytest.approx(0.025)
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
    with pytest.raises(SuiteError, match="factor 2 must be the LR drop it replaces, 1 / decay_factor = 10"):
        make(tmp_path, digits_dir, "batch_schedule: {kind: increase, factor: 2.0}", schedule="step", decay=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["torch", "tf"])
@pytest.mark.parametrize("scope", ["rank", "global"])
def test_discarding_drops_the_fraction_and_is_np_invariant(scope, fw, tmp_path, digits_dir):
    """Both scopes, both frameworks: np=2 x accum=1 gives the weights of np=1 x accum=2 (float64,
    so only the order of sums may differ), and the fraction is dropped in the active epoch only."""
    feature = f"discard_small_loss: {{fraction: 0.25, epochs: 1, scope: {scope}}}"
    two = make(tmp_path, digits_dir, feature, np=2, epochs=2).model_copy(update={"framework": fw}).with_id()
    one = make(tmp_path, digits_dir, feature, np=1, epochs=2).model_copy(update={"framework": fw}).with_id()
    assert two.discard.scope == scope and one.virtual_workers == two.virtual_workers == 2
    run_worker(two, tmp_path / "np2")
    run_single(one, tmp_path / "np1")
    rows = [json.loads(x) for x in (tmp_path / "np2" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    # rank 0's micro-batches: 6 steps x 128 samples, 25% of them (of the global batch: on average)
    dropped = [r["discarded"] for r in epochs]
    assert dropped[1] == 0 and (dropped[0] == 6 * 32 if scope == "rank" else 6 * 20 < dropped[0] < 6 * 44)
    a, b = _weights(tmp_path / "np2", fw), _weights(tmp_path / "np1", fw)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=k)
    if fw == "torch":
        plain = make(tmp_path, digits_dir, "", np=1, epochs=2)
        run_single(plain, tmp_path / "plain")
        c = _weights(tmp_path / "plain", fw)
        assert max(float(np.abs(a[k] - c[k]).max()) for k in a) > 1e-4


@pytest.mark.slow
def test_global_discarding_is_the_kept_mean_of_the_global_batch(tmp_path, digits_dir):
    """Scope global over K = 2 micro-batches of 128 equals scope rank over one micro-batch of 256
    (with the same BN span of 128): the kept set is the global batch's samples above the global
    quantile and the loss their mean - not each micro-batch normalised by its own kept count."""
    feature = "discard_small_loss: {fraction: 0.25, epochs: 1, scope: %s}"
    split = make(tmp_path, digits_dir, feature % "global", np=1, local=128, epochs=1)
    whole = make(tmp_path, digits_dir, feature % "rank", np=1, local=256, span=128, epochs=1)
    assert (split.accum, split.bn_span, whole.accum, whole.bn_span) == (2, 128, 1, 128)
    run_single(split, tmp_path / "split")
    run_single(whole, tmp_path / "whole")
    a, b = final_weights(tmp_path / "split"), final_weights(tmp_path / "whole")
    import torch

    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12, msg=k)


def _weights(rdir, fw):
    if fw == "torch":
        return {k: v.numpy() for k, v in final_weights(rdir).items()}
    data = np.load(rdir / "final.npz")
    return {k: data[k] for k in data.files if k.startswith("w")}


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
    assert_mlperf_compliant(tmp_path / "run" / "mllog.txt")

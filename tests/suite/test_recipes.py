"""Per-batch recipes equal to their sources: MLPerf LARS from the RCPs in the installed package
(every field by one rule, each record's decay-steps convention resolved from its own epochs,
checked against published submissions' logs) and SP-NGD field by field from chainerkfac's
configs; a recipe row owns its whole schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlperf_logging
import pytest

from lbbench.mlperf.rcps import resolve_decay_epochs
from lbbench.suite import SuiteError, expand, load_suite
from lbbench.suite.recipes import SPNGD_CONFIGS, mlperf_lars, snap_weight_decay, spngd

from helpers import ROOT, write_suite

RCP_FILE = f"{mlperf_logging.__path__[0]}/rcp_checker/training_4.0.0/rcps_resnet.json"
LOGS = ROOT / "tests" / "fixtures" / "mlperf-logs"
N = 1_281_167


def test_lars_recipe_at_an_rcp_batch_is_that_rcp():
    rcps = {r["BS"]: r for r in json.load(open(RCP_FILE)).values()}
    assert len(rcps) == 10
    for B, rcp in rcps.items():
        hp, r = rcp["Hyperparams"], mlperf_lars(B)
        assert (
            r.lr["peak_lr"],
            r.lr["warmup_epochs"],
            r.hparams["momentum"],
            r.hparams["weight_decay"],
            r.bn_span,
        ) == (
            hp["opt_base_learning_rate"],
            hp["opt_learning_rate_warmup_epochs"],
            hp["opt_momentum"],
            hp["opt_weight_decay"],
            hp["model_bn_span"],
        )
        assert (r.lr["schedule"], r.lr["warmup_start_lr"], r.lr["end_lr"], r.lr["poly_power"]) == (
            "poly",
            0.0,
            1e-4,
            2.0,
        )
        # the decay length, read in one of the three conventions, gives back the recorded decay steps ...
        steps, warm, train = N / B, hp["opt_learning_rate_warmup_epochs"], r.lr["train_epochs"]
        assert any(
            math.isclose(x, hp["opt_learning_rate_decay_steps"], rel_tol=1e-9)
            for x in ((train - warm) * steps + 1, train * steps, train)
        )
        # ... and covers the epochs the RCP's own runs trained, less one evaluation's granularity
        assert max(rcp["Epochs to converge"]) - 1 <= train <= max(rcp["Epochs to converge"]) + 6
        assert r.max_epochs == math.ceil(train - 1e-9)


def _logged(path: Path) -> dict:
    """The hyperparameters a published result log records, and the last epoch it evaluated."""
    keys, epochs = {}, []
    for line in path.read_text().splitlines():
        if ":::MLLOG" not in line:
            continue
        e = json.loads(line.split(":::MLLOG ", 1)[1])
        keys.setdefault(e["key"], e["value"])
        if e["key"] == "eval_accuracy":
            epochs.append(e["metadata"]["epoch_num"])
    keys["trained_epochs"] = max(epochs)
    return keys


@pytest.mark.parametrize(
    "system,expected,convention",
    [
        ("training_results_v4.0/eos_ngc24.04_mxnet", 37.0, "epochs"),  # NVIDIA logs epochs
        ("training_results_v4.0/tinybox_red", 37.0, "epochs"),  # tinygrad too
        ("training_results_v2.0/cloud-tpu-v4-8192-TF", 60.25, "post-warmup steps + 1"),  # the TF reference
    ],
)
def test_decay_steps_resolve_against_published_logs(system, expected, convention):
    for log in sorted((LOGS / system).glob("result_*.txt")):
        k = _logged(log)
        epochs, how = resolve_decay_epochs(
            k["lars_opt_learning_rate_decay_steps"],
            k["lars_opt_learning_rate_warmup_epochs"],
            k["global_batch_size"],
            k["trained_epochs"],
        )
        assert how == convention and epochs == pytest.approx(expected, abs=0.01), log


def test_lars_recipe_between_rcps_follows_one_rule():
    B = 12_288  # between 8,192 (wd 2e-4) and 13,056 (wd 2.5e-5)
    r, lo, hi = mlperf_lars(B), mlperf_lars(8192), mlperf_lars(13_056)
    f = (math.log2(B) - 13) / (math.log2(13_056) - 13)
    for key in ("peak_lr", "warmup_epochs", "train_epochs"):
        assert r.lr[key] == pytest.approx(lo.lr[key] + f * (hi.lr[key] - lo.lr[key]))
    assert r.hparams["weight_decay"] == snap_weight_decay(2e-4 ** (1 - f) * 2.5e-5**f) == 2.5e-5
    assert r.bn_span == hi.bn_span and "interpolated between B=8192 and B=13056" in r.source
    assert snap_weight_decay(3.3e-5) == 2.5e-5 and snap_weight_decay(1.4e-4) == 1e-4
    assert mlperf_lars(131_072).lr["peak_lr"] == mlperf_lars(67_840).lr["peak_lr"]
    assert "clamped" in mlperf_lars(131_072).source


def test_spngd_recipe_is_chainerkfacs_config_field_by_field():
    for B, (lr, mu, damping, start, p, poly_epoch, epoch, _) in SPNGD_CONFIGS.items():
        r = spngd(B)
        assert (r.lr["peak_lr"], r.hparams["momentum"], r.hparams["damping"]) == (lr, mu, damping)
        assert (r.lr["schedule"], r.lr["decay_start_epochs"], r.lr["poly_power"]) == ("polynomial", start, p)
        assert r.lr["train_epochs"] == max(epoch, poly_epoch) and r.max_epochs == epoch
        assert (r.hparams["weight_decay"], r.hparams["factor_every"], r.hparams["inverse_every"]) == (0.0, 1, 1)
        assert (r.hparams["bn_damping_scale"], r.hparams["weight_rescale"], r.bn_span) == (64.0, True, 32)
        assert any("mixup" in x for x in r.not_reproduced) and any("ResNet-50-D" in x for x in r.not_reproduced)
    assert (spngd(4096).lr["poly_power"], spngd(4096).lr["train_epochs"]) == (11.0, 53.0)
    assert (spngd(131_072).lr["poly_power"], spngd(131_072).lr["train_epochs"], spngd(131_072).max_epochs) == (
        3.0,
        95.0,
        81,
    )


def test_imagenet_suite_recipe_rows_own_their_schedule():
    runs, _ = expand(load_suite(ROOT / "suites" / "imagenet.yaml"))
    lars = {r.global_batch: r for r in runs if r.label == "lars" and r.framework == "torch"}
    assert lars[8192].lr.peak_lr == 17 and lars[8192].hparams["weight_decay"] == 2e-4 and lars[8192].bn_span == 64
    assert lars[8192].lr.warmup_start_lr == 0.0 and lars[8192].division == "closed"  # not the suite's 0.1
    assert "MLPerf RCP" in lars[8192].recipe
    kfac = {r.global_batch: r for r in runs if r.label == "kfac" and r.framework == "torch"}
    assert kfac[32768].hparams["damping"] == 2e-4 and kfac[32768].lr.peak_lr == 3e-2
    assert kfac[32768].lr.schedule == "polynomial" and kfac[32768].lr.warmup_start_lr == 0.0
    assert kfac[32768].max_epochs == 46 and kfac[32768].bn_span == 32


def test_a_recipe_row_may_not_set_its_own_lr(tmp_path):
    suite = write_suite(
        tmp_path / "s.yaml",
        """
name: s
workload: {name: imagenet, data: {kind: synthetic, train_samples: 100000, eval_samples: 1000}}
matrix:
  methods:
    - {name: lars, recipe: mlperf_lars, lr: {warmup_start_lr: 0.1}}
  global_batch: [4096]
  workers: [8]
""",
    )
    with pytest.raises(SuiteError, match=r"s.yaml:6: matrix.methods\[0\].lr: recipe 'mlperf_lars' sets every LR"):
        expand(load_suite(suite))


def test_a_closed_schedule_must_warm_up_from_zero(tmp_path):
    suite = write_suite(
        tmp_path / "s.yaml",
        """
name: s
workload: {name: imagenet, data: {kind: synthetic, train_samples: 100000, eval_samples: 1000}}
lr: {rule: linear, base_lr: 0.1, base_batch: 256, schedule: poly, warmup_epochs: 5, warmup_start_lr: 0.1}
matrix: {methods: [{name: lars}], global_batch: [4096], workers: [8]}
""",
    )
    run = expand(load_suite(suite))[0][0]
    assert run.division == "open" and "warmup from LR 0.1" in run.division_reason


def test_demo_and_ci_suites_show_every_method():
    from lbbench.methods import REGISTRY
    from lbbench.suite.expand import tuning_of

    demo = load_suite(ROOT / "suites" / "demo.yaml")
    ci = load_suite(ROOT / "suites" / "ci.yaml")
    names = {m.name for s in (demo, ci) for m in s.cfg.matrix.methods}
    assert names == set(REGISTRY)
    assert any(m.discard_small_loss for m in ci.cfg.matrix.methods)
    assert any(m.batch_schedule for m in ci.cfg.matrix.methods)
    assert any(tuning_of(ci, i) for i in range(len(ci.cfg.matrix.methods)))  # the gate holds a tuned cell
    # the demo: at least five methods tuned over five batch sizes from 16 to the full 1,536
    tuned = [m.name for i, m in enumerate(demo.cfg.matrix.methods) if tuning_of(demo, i)]
    assert {"sgd", "lars", "lamb", "kfac"} <= set(tuned) and len(tuned) >= 5
    batches = demo.cfg.matrix.global_batch
    assert len(batches) >= 5 and min(batches) == 16 and max(batches) == 1536

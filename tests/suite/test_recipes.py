"""Per-batch recipes: LARS from MLPerf's RCPs in the installed package, SP-NGD for K-FAC."""

from __future__ import annotations

import json
import math

import mlperf_logging
import pytest

from lbbench.suite import expand, load_suite
from lbbench.suite.recipes import mlperf_lars, spngd

from helpers import ROOT

RCP_FILE = f"{mlperf_logging.__path__[0]}/rcp_checker/training_4.0.0/rcps_resnet.json"


def test_lars_recipe_reads_the_installed_rcps():
    rcps = {r["BS"]: r["Hyperparams"] for r in json.load(open(RCP_FILE)).values()}
    assert len(rcps) == 10
    for B, hp in rcps.items():
        r = mlperf_lars(B)
        assert (r["peak_lr"], r["warmup_epochs"], r["momentum"], r["weight_decay"]) == (
            hp["opt_base_learning_rate"],
            hp["opt_learning_rate_warmup_epochs"],
            hp["opt_momentum"],
            hp["opt_weight_decay"],
        )
        S = math.ceil(1_281_167 / B)  # the decay length reproduces MLPerf's decay steps
        assert round((r["train_epochs"] - r["warmup_epochs"]) * S) + 1 == hp["opt_learning_rate_decay_steps"]


def test_lars_recipe_interpolates_in_log_batch_and_clamps_outside():
    mid = mlperf_lars(round(math.sqrt(8192 * 13056)))  # halfway in log2 between two points
    assert mid["peak_lr"] == pytest.approx((17 + 12.8) / 2, rel=1e-3)
    assert "interpolated between B=8192 and B=13056" in mid["source"]
    assert mlperf_lars(131072)["peak_lr"] == mlperf_lars(67840)["peak_lr"]
    assert "clamped" in mlperf_lars(131072)["source"]


def test_spngd_recipe_configs():
    assert (spngd(4096)["peak_lr"], spngd(4096)["momentum"], spngd(4096)["damping"]) == (8.18e-3, 0.997, 2.5e-4)
    assert spngd(32768)["train_epochs"] == 45 and spngd(131072)["damping"] == 1e-4


def test_imagenet_suite_uses_the_recipes():
    runs, _ = expand(load_suite(ROOT / "suites" / "imagenet.yaml"))
    lars = {r.global_batch: r for r in runs if r.label == "lars" and r.framework == "torch"}
    assert lars[8192].lr.peak_lr == 17 and lars[8192].hparams["weight_decay"] == 2e-4
    assert lars[8192].lr.schedule == "poly" and lars[8192].division == "closed"
    assert "MLPerf RCP" in lars[8192].recipe
    kfac = {r.global_batch: r for r in runs if r.label == "kfac" and r.framework == "torch"}
    assert kfac[32768].hparams["damping"] == 2e-4 and kfac[32768].lr.peak_lr == 3e-2
    assert len({r.label for r in runs}) >= 10


def test_demo_suite_shows_every_method():
    from lbbench.methods import REGISTRY

    suite = load_suite(ROOT / "suites" / "demo.yaml")
    names = {m.name for m in suite.cfg.matrix.methods}
    assert names == set(REGISTRY)
    assert any(m.discard_small_loss for m in suite.cfg.matrix.methods)
    assert any(m.batch_schedule for m in suite.cfg.matrix.methods)

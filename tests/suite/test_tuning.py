"""Tuning studies: quasi-random trials known at plan time, validated like the rest of a suite,
ordinary runs (ids from their values, resumable, skipped when done)."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from lbbench.suite import SuiteError, expand, load_suite
from lbbench.suite.config import Distribution, TuningCfg
from lbbench.suite.tuning import trials

from helpers import lbbench, write_suite

SUITE = textwrap.dedent("""\
    name: tune
    workload:
      name: digits
      data: {kind: synthetic, train_samples: 512, eval_samples: 64}
      max_epochs: 1
    lr: {rule: linear, base_lr: 0.1, base_batch: 64, warmup_epochs: 0}
    tuning:
      trials: 3
      space:
        lr.base_lr: {log_uniform: [0.01, 1.0]}
        hparams.momentum: {one_minus_log_uniform: [0.8, 0.99]}
    matrix:
      methods:
        - name: sgd
        - name: lars
          recipe: mlperf_lars
          tuning: null
        - name: lamb
          tuning:
            trials: 2
            space:
              hparams.beta1: {uniform: [0.8, 0.95]}
              lr.warmup_epochs: {choice: [0, 1]}
      global_batch: [64, 128]
      workers: [1]
    """)


def _runs(tmp_path, text=SUITE):
    return expand(load_suite(write_suite(tmp_path / "tune.yaml", text)))[0]


def test_trials_are_known_at_plan_time_and_deterministic(tmp_path):
    runs = _runs(tmp_path)
    by = {
        (r.label, r.global_batch): [x for x in runs if (x.label, x.global_batch) == (r.label, r.global_batch)]
        for r in runs
    }
    assert len(by[("sgd", 64)]) == 3 and len(by[("lamb", 128)]) == 2 and len(by[("lars", 64)]) == 1
    assert by[("lars", 64)][0].trial is None  # tuning: null: the recipe is a fixed reference point
    again = _runs(tmp_path)
    assert [r.run_id for r in runs] == [r.run_id for r in again]
    sgd64, sgd128 = by[("sgd", 64)], by[("sgd", 128)]
    # the same points for every cell of the study: the same budget over the same draws
    assert [r.tuned for r in sgd64] == [r.tuned for r in sgd128]
    for r in sgd64:
        assert 0.01 <= r.tuned["lr.base_lr"] <= 1.0 and 0.8 <= r.hparams["momentum"] <= 0.99
        assert r.lr.peak_lr == pytest.approx(r.tuned["lr.base_lr"])  # base batch 64
    assert len({r.run_id for r in sgd64}) == 3 and all(r.trial == i for i, r in enumerate(sgd64))
    lamb = by[("lamb", 64)]
    assert {r.lr.warmup_epochs for r in lamb} <= {0, 1} and all(0.8 <= r.hparams["beta1"] <= 0.95 for r in lamb)


def test_halton_points_map_onto_each_distribution():
    cfg = TuningCfg(
        trials=64,
        space={
            "a": Distribution(log_uniform=(1e-3, 10.0)),
            "b": Distribution(int_uniform=(1, 4)),
            "c": Distribution(choice=["x", "y"]),
            "d": Distribution(one_minus_log_uniform=(0.9, 0.999)),
        },
    )
    pts = trials(cfg, 0)
    assert pts == trials(cfg, 0) and pts != trials(cfg, 1)  # deterministic; studies differ
    logs = sorted(math.log10(p["a"]) for p in pts)
    assert -3 <= logs[0] and logs[-1] <= 1 and logs[-1] - logs[0] > 3.5  # spread over the decades
    assert {p["b"] for p in pts} == {1, 2, 3, 4} and {p["c"] for p in pts} == {"x", "y"}
    assert all(0.9 <= p["d"] <= 0.999 for p in pts)


BAD = [
    (
        "hparams.momentum: {one_minus",
        "hparams.momentun: {one_minus",
        11,
        "tuning.space.hparams.momentun",
        "unknown hyperparameter 'momentun'",
    ),
    (
        "{log_uniform: [0.01, 1.0]}",
        "{log_uniform: [1.0, 0.01]}",
        10,
        "tuning.space.lr.base_lr.log_uniform",
        "empty range",
    ),
    (
        "{log_uniform: [0.01, 1.0]}",
        "{log_uniform: [0.0, 1.0]}",
        10,
        "tuning.space.lr.base_lr.log_uniform",
        "must be positive",
    ),
    ("      tuning: null\n", "", 10, "tuning.space.lr.base_lr", "recipe 'mlperf_lars' fixes the LR schedule"),
    (
        "hparams.beta1: {uniform: [0.8, 0.95]}",
        "hparams.beta1: {uniform: [0.8, 0.95], choice: [1]}",
        22,
        "matrix.methods[2].tuning.space.hparams.beta1",
        "exactly one distribution",
    ),
]


@pytest.mark.parametrize("old,new,line,field,fragment", BAD, ids=[b[3] for b in BAD])
def test_bad_tuning_blocks_name_file_line_field(tmp_path, old, new, line, field, fragment):
    assert old in SUITE
    path = write_suite(tmp_path / "bad.yaml", SUITE.replace(old, new))
    with pytest.raises(SuiteError) as e:
        expand(load_suite(path))
    assert (e.value.line, e.value.field) == (line, field), str(e.value)
    assert fragment in str(e.value)
    p = lbbench("plan", path)
    assert p.returncode == 2 and f"bad.yaml:{line}" in p.stderr


def test_plan_prints_every_run_as_json_and_csv(tmp_path):
    path = write_suite(tmp_path / "tune.yaml", SUITE)
    p = lbbench("plan", path, "--format", "json")
    assert p.returncode == 0, p.stderr
    runs = json.loads(p.stdout)
    assert len(runs) == 2 * (3 + 1 + 2)
    first = runs[0]
    assert first["trial"] == 0 and first["tuned"] and first["lr"]["schedule"] and first["hparams"]["momentum"]
    c = lbbench("plan", path, "--format", "csv")
    header, *lines = c.stdout.splitlines()
    assert len(lines) == len(runs) and "lr.peak_lr" in header.split(",") and "tuned.lr.base_lr" in header.split(",")


@pytest.mark.slow
def test_trials_run_resume_and_skip_like_any_run(tmp_path):
    text = SUITE.replace("global_batch: [64, 128]", "global_batch: [128]").replace("trials: 3", "trials: 2")
    text = text.replace("    - name: lars\n      recipe: mlperf_lars\n      tuning: null\n", "")
    text = text.replace(
        "    - name: lamb\n      tuning:\n        trials: 2\n        space:\n"
        "          hparams.beta1: {uniform: [0.8, 0.95]}\n"
        "          lr.warmup_epochs: {choice: [0, 1]}\n",
        "",
    )
    path = write_suite(tmp_path / "tune.yaml", text)
    p = lbbench("run", path, "--results", tmp_path / "r")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Tuning studies" in (tmp_path / "r" / "tune" / "report.md").read_text()
    again = lbbench("run", path, "--results", tmp_path / "r")
    assert again.stdout.count("done before") == 2


def test_plan_cost_counts_every_trial_at_the_epoch_budget(tmp_path):
    from lbbench.suite.plan_output import cost_rows

    runs = _runs(tmp_path)
    rows = {(r["method"], r["global_batch"]): r for r in cost_rows(runs, images_per_s=1000.0)}
    sgd = rows[("sgd", 64)]
    assert sgd["runs"] == 3 and sgd["steps"] == 3 * 8 * 1  # 3 trials x ceil(512 / 64) steps x 1 epoch
    assert sgd["samples"] == sgd["steps"] * 64
    assert sgd["wall_hours"] == pytest.approx(sgd["samples"] / 1000.0 / 3600)  # one worker
    assert sgd["accelerator_hours"] == pytest.approx(sgd["wall_hours"])
    p = lbbench("plan", write_suite(tmp_path / "t.yaml", SUITE), "--cost", "--images-per-s", "1000")
    assert p.returncode == 0 and "total: 12 runs" in p.stdout, p.stdout

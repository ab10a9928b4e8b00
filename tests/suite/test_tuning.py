"""Tuning studies: quasi-random trials known at plan time, validated like the rest of a suite,
ordinary runs (ids from their values, resumable, skipped when done)."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from lbbench.store.summary import read_summary
from lbbench.suite import SuiteError, expand, load_suite
from lbbench.suite.config import Distribution, TuningCfg
from lbbench.suite.tuning import trials

from helpers import fake_summary, lbbench, write_suite

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
    text = text.replace("tuning:\n  trials: 2\n", "tuning:\n  trials: 2\n  final_seeds: 2\n")
    assert "final_seeds: 2" in text
    path = write_suite(tmp_path / "tune.yaml", text)
    before = lbbench("plan", path, "--results", tmp_path / "r")
    assert "+ 2 final-seed run(s)" in before.stdout
    p = lbbench("run", path, "--results", tmp_path / "r")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "2 final-seed run(s) of the tuning winners" in p.stdout
    summaries = [read_summary(d) for d in sorted((tmp_path / "r" / "tune").glob("sgd-*"))]
    trials_ = [s for s in summaries if s.trial is not None]
    finals = [s for s in summaries if s.final_of]
    assert len(trials_) == 2 and len(finals) == 2 and {s.seed for s in finals} == {1, 2}
    best = min(trials_, key=lambda s: (s.steps_to_target or math.inf, -(s.best_top1 or 0)))
    assert all(s.tuned == best.tuned and s.final_of == f"0.{best.trial}" for s in finals)
    md = (tmp_path / "r" / "tune" / "report.md").read_text()
    assert "Tuning studies" in md and "final_runs" in md
    again = lbbench("run", path, "--results", tmp_path / "r")
    assert again.stdout.count("done before") == 4  # the finals are known now: planned up front
    after = lbbench("plan", path, "--results", tmp_path / "r")
    assert after.stdout.count("final of 0.") == 2 and "final-seed run(s) of tuning winners" not in after.stdout


def test_final_seeds_rerun_each_cells_winner_once_its_trials_are_done(tmp_path):
    from lbbench.suite.finals import final_runs, planned_finals

    text = SUITE.replace("  trials: 3\n", "  trials: 3\n  final_seeds: 2\n")
    suite = load_suite(write_suite(tmp_path / "tune.yaml", text))
    runs = expand(suite)[0]
    assert len(planned_finals(suite, runs)) == 2 * 2  # sgd's two cells; lars untuned, lamb has its own block
    sgd64 = [r for r in runs if r.label == "sgd" and r.global_batch == 64]
    res = tmp_path / "res"
    fake_summary(sgd64[0], res, 30)
    fake_summary(sgd64[1], res, 20)
    assert final_runs(suite, runs, res) == []  # the third trial has not run: no winner yet
    fake_summary(sgd64[2], res, None)
    finals = final_runs(suite, runs, res)
    assert [f.seed for f in finals] == [1, 2]  # after the matrix's seeds
    assert all(f.tuned == sgd64[1].tuned and f.final_of == "0.1" and f.trial is None for f in finals)
    assert all(f.hparams == sgd64[1].hparams and f.lr == sgd64[1].lr for f in finals)
    assert len({f.run_id for f in finals} | {r.run_id for r in runs}) == len(runs) + 2
    assert [f.run_id for f in final_runs(suite, runs, res)] == [f.run_id for f in finals]  # deterministic


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


def test_plan_cost_on_a_given_number_of_accelerators(tmp_path):
    from lbbench.suite.plan_output import cost_rows

    runs = _runs(tmp_path)
    one = {(r["method"], r["global_batch"]): r for r in cost_rows(runs, images_per_s=1000.0)}
    wide = {(r["method"], r["global_batch"]): r for r in cost_rows(runs, images_per_s=1000.0, accelerators=128)}
    for key, r in wide.items():  # the same images, spread over 128 accelerators
        assert r["samples"] == one[key]["samples"] and r["accelerators"] == 128
        assert r["wall_hours"] == pytest.approx(one[key]["wall_hours"] / 128)
        assert r["accelerator_hours"] == pytest.approx(one[key]["accelerator_hours"])
        assert r["images_per_accelerator_step"] == key[1] / 128
    path = write_suite(tmp_path / "t.yaml", SUITE)
    p = lbbench("plan", path, "--cost", "--accelerators", "128", "--format", "json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["accelerators"] for r in rows} == {128} and sum(r["runs"] for r in rows) == 12
    p = lbbench("plan", path, "--cost", "--accelerators", "128")
    assert "(!) fewer images per step than accelerators" in p.stdout  # batch 64 on 128 of them


AS_ALGOPERF = SUITE.replace(
    "    lr.base_lr: {log_uniform: [0.01, 1.0]}\n",
    "    lr.base_lr: {log_uniform: [0.01, 1.0]}\n"
    "    lr.end_factor: {choice: [0.001, 0.01]}\n"
    "    label_smoothing: {choice: [0.1, 0.2]}\n",
)
assert AS_ALGOPERF != SUITE


def test_label_smoothing_and_a_relative_end_lr_can_be_searched(tmp_path):
    runs = [r for r in _runs(tmp_path, AS_ALGOPERF) if r.label == "sgd"]
    assert {r.label_smoothing for r in runs} == {0.1, 0.2}  # both choices drawn in 3 trials
    for r in runs:
        assert r.label_smoothing == r.tuned["label_smoothing"]
        # the end LR follows the sampled peak: end_factor x peak, not an absolute floor
        assert r.lr.end_lr == pytest.approx(r.tuned["lr.end_factor"] * r.lr.peak_lr)
    lars = next(r for r in _runs(tmp_path, AS_ALGOPERF) if r.label == "lars")
    assert lars.label_smoothing == 0.0  # untuned entries keep the workload's (digits: none)
    bad = write_suite(tmp_path / "bad.yaml", AS_ALGOPERF.replace("label_smoothing: {choice", "smoothing: {choice"))
    with pytest.raises(SuiteError, match=r"a searched key is lr\.<field>, hparams\.<name> or one of label_smoothing"):
        expand(load_suite(bad))

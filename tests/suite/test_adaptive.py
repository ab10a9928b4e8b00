"""Adaptive tuning studies (sampler: tpe, Optuna): trials chosen as earlier ones finish, the
study kept in the results directory and shared, budgets respected, interrupted trials resumed,
failed ones counted; and a real `lbbench run` of one."""

from __future__ import annotations

import textwrap

import pytest

from lbbench.store.summary import RunSummary, read_summary
from lbbench.suite import expand, load_suite
from lbbench.suite.adaptive import JOURNAL, known_trials, next_trials, objective

from helpers import fake_summary, lbbench, write_suite

SUITE = textwrap.dedent("""\
    name: tpe
    workload:
      name: digits
      data: {kind: synthetic, train_samples: 256, eval_samples: 64}
      max_epochs: 2
    lr: {rule: linear, base_lr: 0.1, base_batch: 64, warmup_epochs: 0}
    tuning:
      sampler: tpe
      trials: 3
      space:
        lr.base_lr: {log_uniform: [0.01, 1.0]}
        hparams.momentum: {one_minus_log_uniform: [0.5, 0.99]}
    matrix:
      methods: [{name: sgd}]
      global_batch: [64]
      workers: [1]
    """)


def _summary(spec, res, steps=None, status=None):
    fake_summary(spec, res, steps, **({"status": status} if status else {}))


@pytest.fixture
def suite(tmp_path):
    return load_suite(write_suite(tmp_path / "tpe.yaml", SUITE))


def test_trials_are_chosen_one_at_a_time_within_the_budget(suite, tmp_path):
    res = tmp_path / "res"
    assert expand(suite)[0] == []  # nothing known at plan time
    (first,) = next_trials(suite, res)
    assert first.trial == 0 and first.study == 0 and set(first.tuned) == {"lr.base_lr", "hparams.momentum"}
    assert 0.01 <= first.tuned["lr.base_lr"] <= 1.0 and 0.5 <= first.tuned["hparams.momentum"] <= 0.99
    assert first.lr.peak_lr == pytest.approx(first.tuned["lr.base_lr"])
    assert first.hparams["momentum"] == first.tuned["hparams.momentum"]
    assert [r.run_id for r in next_trials(suite, res)] == [first.run_id]  # unfinished: resumed, not re-asked
    _summary(first, res, steps=12)
    (second,) = next_trials(suite, res)
    assert second.trial == 1 and second.run_id != first.run_id
    _summary(second, res, status="failed")  # a failed trial counts against the budget
    (third,) = next_trials(suite, res)
    assert third.trial == 2
    _summary(third, res, steps=None)  # missed the target
    assert next_trials(suite, res) == []  # the budget is spent
    assert (res / "tpe" / JOURNAL).exists()
    assert [r.run_id for r in known_trials(suite, res)] == [first.run_id, second.run_id, third.run_id]


def test_the_objective_ranks_reaching_first_then_closeness(suite, tmp_path):
    (spec,) = next_trials(suite, tmp_path / "res")
    budget = spec.max_epochs * spec.steps_per_epoch  # 2 epochs x 4 steps
    base = dict(
        run_id="x", suite="tpe", method="sgd", label="sgd", global_batch=64, framework="torch", np=1, accum=1,
        seed=0, division="open", target_top1=spec.target_top1, wall_s=1.0,
    )  # fmt: skip
    reached = RunSummary(status="success", steps_to_target=budget, best_top1=0.99, **base)
    close = RunSummary(status="not_reached", best_top1=spec.target_top1 * 0.9, **base)
    far = RunSummary(status="not_reached", best_top1=0.1, **base)
    assert objective(spec, reached) == budget < objective(spec, close) < objective(spec, far)


def test_a_trial_another_process_trains_is_left_to_it(suite, tmp_path):
    res = tmp_path / "res"
    (first,) = next_trials(suite, res)
    (other,) = next_trials(suite, res, busy=lambda spec: spec.run_id == first.run_id)
    assert other.trial == 1  # a second process gets a new trial of the shared study


def test_plan_counts_the_adaptive_trials(tmp_path):
    path = write_suite(tmp_path / "tpe.yaml", SUITE)
    p = lbbench("plan", path, "--results", tmp_path / "res")
    assert p.returncode == 0, p.stderr
    assert "+ 3 adaptive trial(s) (Optuna TPE)" in p.stdout
    c = lbbench("plan", path, "--cost")
    assert c.returncode == 0 and "total: 3 runs" in c.stdout
    bad = lbbench("plan", write_suite(tmp_path / "bad.yaml", SUITE.replace("sampler: tpe", "sampler: grid")))
    assert bad.returncode == 2 and "bad.yaml:" in bad.stderr


@pytest.mark.slow
def test_a_real_adaptive_study_runs_resumes_and_reports(tmp_path):
    path = write_suite(tmp_path / "tpe.yaml", SUITE)
    p = lbbench("run", path, "--results", tmp_path / "r")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("adaptive tuning (Optuna TPE)") == 3
    runs = [read_summary(d) for d in sorted((tmp_path / "r" / "tpe").glob("sgd-*"))]
    assert sorted(s.trial for s in runs) == [0, 1, 2] and all(s.done for s in runs)
    assert "Tuning studies" in (tmp_path / "r" / "tpe" / "report.md").read_text()
    again = lbbench("run", path, "--results", tmp_path / "r")
    assert again.returncode == 0 and again.stdout.count("done before") == 3
    assert "adaptive tuning" not in again.stdout

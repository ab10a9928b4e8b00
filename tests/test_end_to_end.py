"""`lbbench run` on a tiny suite through real horovodrun, then the MLPerf checker and the report."""

from __future__ import annotations

import json

import pytest

from helpers import ROOT, lbbench, mlperf_check

pytestmark = pytest.mark.slow
SUITE = ROOT / "tests" / "suites" / "tiny.yaml"


def check_log(path, expect_division):
    log = path.read_text()
    assert f'"key": "submission_division", "value": "{expect_division}"' in log
    p = mlperf_check(path)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "SUCCESS" in out and "FAILED" not in out, out


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory, digits_dir):
    results = tmp_path_factory.mktemp("results")
    env = {"LBBENCH_DIGITS": str(digits_dir)}
    p = lbbench("run", SUITE, "--results", results, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return results, env, p


def test_run_writes_every_file_and_the_table(tiny_results):
    results, _, p = tiny_results
    runs = sorted((results / "tiny").glob("*/summary.json"))
    assert len(runs) == 3
    for s in runs:
        summary = json.loads(s.read_text())
        rdir = s.parent
        for name in ("run.yaml", "mllog.txt", "metrics.jsonl", "worker.log", "final.pt"):
            assert (rdir / name).exists(), name
        assert summary["status"] in ("success", "not_reached"), summary
        assert summary["ranks_agree"] and summary["images_per_s"] > 0
        rows = [json.loads(x) for x in (rdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == list(range(1, summary["epochs_run"] + 1))
        if summary["status"] == "success":
            assert summary["epochs_to_target"] == summary["epochs_run"]
            assert summary["samples_to_target"] == summary["steps_to_target"] * summary["global_batch"]
            assert 0 < summary["time_to_target_s"] <= summary["wall_s"]
    small = json.loads(next((results / "tiny").glob("sgd-b64-*/summary.json")).read_text())
    assert small["status"] == "success" and small["best_top1"] >= 0.8
    assert "| sgd | 64 | torch |" in p.stdout and "| sgd_nesterov | 64 | torch |" in p.stdout
    assert (results / "tiny" / "report.md").exists() and (results / "tiny" / "report.csv").exists()


def test_logs_pass_the_mlperf_compliance_checker(tiny_results):
    results, _, _ = tiny_results
    check_log(next((results / "tiny").glob("sgd-b64-*/mllog.txt")), "closed")
    check_log(next((results / "tiny").glob("sgd_nesterov-b64-*/mllog.txt")), "open")


def test_rerun_skips_completed_runs_and_report_rebuilds(tiny_results):
    results, env, _ = tiny_results
    before = {p: p.stat().st_mtime for p in (results / "tiny").glob("*/summary.json")}
    p = lbbench("run", SUITE, "--results", results, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("done before, skipped") == 3
    assert before == {p: p.stat().st_mtime for p in (results / "tiny").glob("*/summary.json")}
    r = lbbench("report", results / "tiny")
    assert r.returncode == 0 and "| sgd | 768 | torch |" in r.stdout

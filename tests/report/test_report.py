"""Reports and compare against checked-in real result directories (golden files).

tests/golden/results/golden/ holds the run directories of a real `lbbench run` of
tests/golden/golden.yaml (2 Horovod workers, digits): successes over 3 seeds, not-reached,
a diverged run, a run stopped by --timeout and an unfinished run (its process killed), with
their run.yaml, summary.json, metrics.jsonl and mllog.txt (weights and checkpoints removed).
The expected outputs beside them were generated once and read by a person."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lbbench.report.build import build, method_summaries
from lbbench.report.tables import collect, markdown, rows

from helpers import GOLDEN, RESULTS, lbbench


@pytest.fixture
def results(tmp_path) -> Path:
    out = tmp_path / "golden"
    shutil.copytree(RESULTS, out)
    return out


def test_table_matches_golden():
    table = rows(collect(RESULTS))
    assert markdown(table) == (GOLDEN / "expected_table.md").read_text()
    statuses = {s["status"] for s in collect(RESULTS)}
    assert statuses == {"success", "not_reached", "diverged", "timeout", "unfinished"}
    sgd64 = next(r for r in table if r["method"] == "sgd" and r["global_batch"] == 64)
    assert sgd64["runs"] == sgd64["seeds"] == 3 and sgd64["epochs_spread"] is not None


def test_text_summaries_match_golden():
    assert method_summaries(rows(collect(RESULTS))) == json.loads((GOLDEN / "expected_texts.json").read_text())


def test_figures_have_the_expected_axes_and_series(results):
    out = build(results)
    figs = {f["file"]: f for f in out["figures"]}
    expected = json.loads((GOLDEN / "expected_figures.json").read_text())
    assert figs == {f["file"]: f for f in expected}
    for f in figs.values():
        png = (results / "figures" / f["file"]).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    steps = figs["steps_to_target.png"]
    assert steps["xscale"] == "log" and steps["yscale"] == "log" and "perfect scaling" in steps["series"]
    html = (results / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figs) and "<table class='sortable'>" in html
    md = (results / "report.md").read_text()
    assert all(f"figures/{name}" in md for name in figs)


def test_rcp_points_overlay_only_for_imagenet(tmp_path):
    from lbbench.mlperf.rcps import mlperf_rcps
    from lbbench.report.plots import to_target_vs_batch

    cells = {"lars (torch)": {4096: 40.0, 32768: 58.0}}
    with_rcp = to_target_vs_batch(cells, "epochs_to_target", tmp_path, mlperf_rcps(), train_samples=1_281_167)
    without = to_target_vs_batch(cells, "epochs_to_target", tmp_path, mlperf_rcps(), train_samples=1536)
    assert "MLPerf RCP (LARS)" in with_rcp["series"] and "MLPerf RCP (LARS)" not in without["series"]


def test_report_cli_formats(results):
    p = lbbench("report", results, "--format", "md,csv")
    assert p.returncode == 0, p.stderr
    assert (results / "report.md").exists() and (results / "report.csv").exists()
    assert not (results / "report.html").exists()
    assert lbbench("report", results, "--format", "pdf").returncode == 2


def test_compare_identical_passes_and_baseline_roundtrip(tmp_path):
    base = tmp_path / "base.json"
    assert lbbench("baseline", RESULTS, "--out", base, "--machine", "test").returncode == 0
    p = lbbench("compare", RESULTS, base)
    assert p.returncode == 0 and "no regression" in p.stdout, p.stdout


@pytest.mark.slow
def test_scaling_efficiency_and_time_table_from_runs_at_two_worker_counts(tmp_path, digits_dir):
    """One cell at np=1 and np=2 (real runs): the row has a scaling efficiency (images/s per
    worker at np 2 over np 1), the images/s-vs-workers figure exists, and the time table has
    the decomposition shares."""
    from helpers import write_suite

    suite = write_suite(
        tmp_path / "np.yaml",
        f"""
name: npscale
workload:
  {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{digits_dir}"}},
   max_epochs: 1, target_top1: 0.99}}
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix: {{methods: [{{name: sgd}}], global_batch: [128], workers: [1, 2]}}
run: {{checkpoint_every: 0}}
""",
    )
    p = lbbench("run", suite, "--results", tmp_path / "res")
    assert p.returncode == 0, p.stdout[-3000:]
    out = build(tmp_path / "res" / "npscale", ("md",))
    (row,) = out["table"]
    assert row["np"] == "1/2" and row["runs"] == 2
    by_np = {s["np"]: s["images_per_s"] for s in collect(tmp_path / "res" / "npscale")}
    assert row["scaling_efficiency"] == pytest.approx((by_np[2] / 2) / by_np[1])
    assert any(f["file"] == "images_per_s_vs_np.png" for f in out["figures"])
    (t,) = out["times"]
    shares = [t[f"{k}_share"] for k in ("data", "compute", "allreduce", "optimizer", "other", "overhead", "eval")]
    assert sum(shares) == pytest.approx(1.0) and t["compute_share"] > 0.1
    assert "## Where the time goes" in (tmp_path / "res" / "npscale" / "report.md").read_text()

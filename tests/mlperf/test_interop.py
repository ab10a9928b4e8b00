"""Published MLPerf results (tests/fixtures/mlperf-logs, real submissions): imported as runs,
scored exactly as MLPerf's result_summarizer scores them, compared with lbbench's own runs,
exported and imported back with the same scores."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbbench.mlperf.export import Cell, ExportError, system_description
from lbbench.mlperf.importer import import_paths, provenance
from lbbench.mlperf.scoring import olympic
from lbbench.report.tables import collect, rows
from lbbench.store.summary import read_summary

from helpers import ROOT, lbbench, write_suite

LOGS = ROOT / "tests" / "fixtures" / "mlperf-logs"
SYSTEMS = {  # folder -> (round, ruleset, org)
    "eos_ngc24.04_mxnet": ("training_results_v4.0", "4.0.0", "NVIDIA"),
    "tinybox_red": ("training_results_v4.0", "4.0.0", "tinycorp"),
    "cloud-tpu-v4-8192-TF": ("training_results_v2.0", "2.0.0", "Google"),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, dict]:
    res = tmp_path_factory.mktemp("imported")
    return {s["system"]: s for s in import_paths([LOGS], res)} | {"_root": {"path": res}}


def _summarizer_minutes(tmp: Path, folder: str) -> float:
    """result_summarizer's own output for one system, in the submission layout it expects. It is
    run twice, as the round's review does: the first run's RCP check writes the normalisation
    factor (scaling.json) that the second applies."""
    round_, ruleset, org = SYSTEMS[folder]
    sub = tmp / folder / org
    shutil.copytree(LOGS / round_ / folder, sub / "results" / folder / "resnet")
    (sub / "systems").mkdir()
    shutil.copy(LOGS / round_ / "systems" / f"{folder}.json", sub / "systems")
    for _ in range(2):
        p = subprocess.run(
            [sys.executable, "-m", "mlperf_logging.result_summarizer", str(sub), "training", ruleset, "--csv", "s.csv"],
            cwd=tmp / folder,
            capture_output=True,
            text=True,
        )
        assert p.returncode == 0, p.stderr[-2000:]
    (row,) = list(csv.DictReader(open(tmp / folder / "s.csv")))
    return float(row["resnet"])


@pytest.mark.parametrize("folder", sorted(SYSTEMS))
def test_scores_equal_result_summarizers_to_three_decimals(folder, imported, tmp_path):
    ours = imported[folder]["score"].minutes
    theirs = _summarizer_minutes(tmp_path, folder)
    assert round(ours, 3) == round(theirs, 3), (ours, theirs)


def test_official_scores_and_what_the_import_records(imported):
    nv, tpu, tiny = (imported[k] for k in ("eos_ngc24.04_mxnet", "cloud-tpu-v4-8192-TF", "tinybox_red"))
    assert round(nv["score"].minutes, 3) == 13.326 and round(nv["score"].olympic_minutes, 3) == 13.270
    assert round(tpu["score"].minutes, 5) == 0.19076 and tpu["score"].converged == 4
    assert round(tiny["score"].minutes, 3) == 167.147
    s = read_summary(nv["runs"][0])
    assert (s.method, s.global_batch, s.framework, s.accelerators, s.accelerator) == (
        "lars",
        3200,
        "mxnet",
        8,
        "NVIDIA H100-SXM5-80GB",
    )
    assert s.published and s.status == "success" and s.time_to_train_s and s.epochs_to_target == 35
    prov = provenance(nv["runs"][0])
    assert prov["submitter"] == "NVIDIA" and prov["compliant"] and len(prov["sha256"]) == 64
    # the non-converged TPU run: imported as such, with the checker's words, never dropped
    bad_dir = next(r for r in tpu["runs"] if r.name.endswith("result_2"))
    bad = read_summary(bad_dir)
    assert bad.status == "not_reached" and "eval_accuracy" in bad.reason, bad.reason
    assert not provenance(bad_dir)["compliant"]


def test_non_converged_runs_count_as_infinite():
    assert olympic([1.0, 2.0, 3.0, 4.0, None]) == pytest.approx(3.0)  # drops 1.0 and the infinite one
    assert olympic([1.0, 2.0, 3.0, None, None]) is None  # two failures: no score
    assert olympic([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(3.0)
    # fewer runs than MLPerf requires: nothing to drop, the plain mean; a miss leaves no score
    assert olympic([1.0, 2.0]) == pytest.approx(1.5) and olympic([1.0, None]) is None


def test_report_marks_published_rows_and_scores_them(imported):
    table = rows(collect(imported["_root"]["path"]))
    nv = next(r for r in table if r["global_batch"] == 3200)
    assert nv["source"] == "published: MLPerf v4.0 NVIDIA Eos"
    assert round(nv["mlperf_minutes"], 3) == 13.326 and nv["accelerators"] == "8 x NVIDIA H100-SXM5-80GB"
    assert nv["images_per_s_per_accelerator"] == pytest.approx(nv["images_per_s"] / 8)
    p = lbbench("report", imported["_root"]["path"])
    assert p.returncode == 0, p.stderr
    figs = json.loads((imported["_root"]["path"] / "figures" / "figures.json").read_text())
    steps = next(f for f in figs if f["file"] == "steps_to_target.png")
    assert any("published" in s for s in steps["series"]) and "MLPerf RCP (LARS)" in steps["series"]


def test_compare_that_matches_nothing_is_an_error(imported):
    """It used to pass silently with exit 0 (cells keyed by framework)."""
    golden = ROOT / "tests" / "golden" / "results"
    p = lbbench("compare", golden, imported["_root"]["path"] / "mlperf-v4.0")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no cell" in p.stderr and "lars|3200|mxnet" in p.stderr and "sgd|64|torch" in p.stderr


def test_export_then_import_gives_the_same_score(imported, tmp_path):
    pkg = tmp_path / "pkg"
    p = lbbench("export-mlperf", imported["_root"]["path"] / "mlperf-v4.0", pkg, "--cell", "lars:3200")
    assert (pkg / "results" / "eos_ngc24.04_mxnet" / "resnet" / "result_4.txt").exists(), p.stdout + p.stderr
    again = import_paths([pkg], tmp_path / "again", "4.0.0")
    assert again[0]["score"].minutes == imported["eos_ngc24.04_mxnet"]["score"].minutes


def test_export_refuses_runs_without_an_accelerator_record():
    golden = ROOT / "tests" / "golden" / "results" / "golden"
    runs = [(d, read_summary(d)) for d in sorted(golden.glob("sgd-b64-*"))]
    with pytest.raises(ExportError, match="without a record of their accelerators"):
        system_description(Cell("sgd", 64, "torch", 2, runs), "me")


OWN = """
name: cluster
workload: {name: digits, model: resnet_tiny, data: {kind: synthetic, train_samples: 6400, eval_samples: 256},
           max_epochs: 1, target_top1: 0.05}
lr: {rule: linear, base_lr: 0.1, base_batch: 256}
matrix: {methods: [{name: lars}], global_batch: [3200], workers: [1]}
"""


@pytest.mark.slow
def test_own_runs_compare_with_published_ones_by_method_and_batch(imported, tmp_path):
    suite = write_suite(tmp_path / "cluster.yaml", OWN)
    p = lbbench("run", suite, "--results", tmp_path / "own")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    own = read_summary(next((tmp_path / "own" / "cluster").glob("lars-*")))
    assert own.accelerators == 1 and own.accelerator and own.time_to_train_s
    published = imported["_root"]["path"] / "mlperf-v4.0"
    plain = lbbench("compare", tmp_path / "own" / "cluster", published)
    assert plain.returncode == 2  # torch vs mxnet: no cell on both sides
    p = lbbench("compare", tmp_path / "own" / "cluster", published, "--match", "method,batch", "--time")
    assert p.returncode in (0, 1), p.stdout + p.stderr
    assert "lars|3200" in p.stdout and "13.3 min" in p.stdout and "accelerator-hours" in p.stdout

"""`lbbench export-mlperf`: five real seeds of one cell become an MLPerf package that MLPerf's
own package checker, result summarizer and RCP checker accept; a damaged package is refused."""

from __future__ import annotations

import json

import pytest

from lbbench.mlperf.export import package_checker

from helpers import lbbench, write_suite

pytestmark = pytest.mark.slow  # the fixture trains five real runs

FIVE_SEEDS = """
name: five
workload:
  name: digits
  model: resnet_tiny
  data: {kind: folder, path: "${LBBENCH_DIGITS}"}
  target_top1: 0.8
  max_epochs: 3
lr: {rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}
matrix:
  # Nesterov makes the cell open division: MLPerf has no RCP at batch 128 for the closed one.
  methods: [{name: sgd, label: sgd_nesterov, hparams: {nesterov: true}}]
  global_batch: [128]
  seeds: [0, 1, 2, 3, 4]
  workers: [1]
run: {checkpoint_every: 0}
"""


@pytest.fixture(scope="module")
def five(tmp_path_factory, digits_dir):
    tmp = tmp_path_factory.mktemp("five")
    suite = write_suite(tmp / "five.yaml", FIVE_SEEDS.replace("${LBBENCH_DIGITS}", str(digits_dir)))
    p = lbbench("run", suite, "--results", tmp / "res")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return tmp / "res" / "five"


def test_package_layout_passes_mlperf_checkers(five, tmp_path):
    pkg = tmp_path / "pkg"
    p = lbbench("export-mlperf", five, pkg, "--cell", "sgd_nesterov:128", "--custom-rcps", "always")
    assert p.returncode == 0, p.stdout + p.stderr
    system = "lbbench_sgd_nesterov_b128_torch_np1"
    results = sorted((pkg / "results" / system / "resnet").iterdir())
    assert [f.name for f in results] == [f"result_{i}.txt" for i in range(5)]
    assert all(":::MLLOG" in f.read_text() for f in results)
    desc = json.loads((pkg / "systems" / f"{system}.json").read_text())
    assert desc["division"] == "open" and desc["system_name"] == system
    for tool in ("package_checker", "result_summarizer", "rcp_checker"):
        assert f"PASS {tool}" in p.stdout, p.stdout
    # The summarizer scored the benchmark: a resnet time in minutes, from the copied logs.
    summary = (pkg / "summary.csv").read_text().splitlines()
    header, row = summary[0].split(","), summary[1]
    assert "resnet" in header and system in row
    # lbbench's RCP record is MLPerf's schema and holds the five seeds' epochs to target.
    rcps = json.loads((pkg / "rcps" / "custom_rcps_resnet.json").read_text())
    ours = rcps["resnet_lbbench_sgd_nesterov_128"]
    assert ours["BS"] == 128 and len(ours["Epochs to converge"]) == 5
    assert "resnet_ref_67840" in rcps  # MLPerf's own records stay, so interpolation still works
    # A damaged package is refused by the real checker, and lbbench reports it.
    for f in results[:2]:
        f.write_text("\n".join(ln for ln in f.read_text().splitlines() if '"run_stop"' not in ln) + "\n")
    assert not package_checker(pkg, bypass_rcp=True).passed


def test_export_refuses_thin_cells_and_non_empty_out(five, tmp_path):
    p = lbbench("export-mlperf", five, tmp_path / "x", "--cell", "sgd_nesterov:256")
    assert p.returncode == 2 and "matches no finished cell" in p.stderr and "sgd_nesterov:128:torch:1" in p.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    p = lbbench("export-mlperf", five, tmp_path / "full")
    assert p.returncode == 2 and "not empty" in p.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    p = lbbench("export-mlperf", five, tmp_path / "y", "--cell", "sgd_nesterov")
    assert p.returncode == 2 and "METHOD:BATCH" in p.stderr

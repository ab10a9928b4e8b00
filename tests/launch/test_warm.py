"""Warm launches: the cells of a suite that share np and framework are trained in turn by one
launch of workers - with exactly the results of one launch per cell (bit for bit), each cell's
own log, MLLOG and summary, and a failing cell recorded alone while the cells after it still run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lbbench.launch.runner import _launch_groups

from helpers import lbbench, spec_from, write_suite

pytestmark = pytest.mark.slow

SUITE = """
name: warm
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}},
           max_epochs: 2, target_top1: 0.999}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix:
  methods: [{{name: sgd}}, {{name: lars}}, {{name: kfac, hparams: {{damping: 0.01}}}}]
  global_batch: [128]
  frameworks: [{frameworks}]
  workers: [2]
"""


def _digests(results: Path) -> dict[str, list[str]]:
    return {
        d.name: json.loads((d / "summary.json").read_text())["param_digests"]
        for d in sorted((results / "warm").iterdir())
        if (d / "run.yaml").exists()
    }


@pytest.mark.parametrize("frameworks", ["torch", "tf"])
def test_warm_cells_equal_cold_cells_bit_for_bit(frameworks, tmp_path, digits_dir):
    suite = write_suite(tmp_path / "warm.yaml", SUITE.format(data=digits_dir, frameworks=frameworks))
    warm = lbbench("run", suite, "--results", tmp_path / "w")
    cold = lbbench("run", suite, "--results", tmp_path / "c", "--cold")
    assert warm.returncode == cold.returncode == 0, warm.stdout[-2000:] + cold.stdout[-2000:]
    assert _digests(tmp_path / "w") == _digests(tmp_path / "c") and len(_digests(tmp_path / "w")) == 3
    launches = (tmp_path / "w" / "warm" / "warm-launches.log").read_text()
    assert launches.count("$ ") == 1  # the three cells in one launch
    for rdir in (tmp_path / "w" / "warm").iterdir():
        if (rdir / "run.yaml").exists():
            log = (rdir / "worker.log").read_text()
            assert "(warm launch: cell" in log and "# warm launch (pid" in log
            mllog = (rdir / "mllog.txt").read_text()  # its own log: one run_start, one run_stop
            assert mllog.count('"key": "run_start"') == 1 and mllog.count('"key": "run_stop"') == 1


def test_a_failing_cell_is_recorded_alone_and_the_rest_still_run(tmp_path, digits_dir):
    """Each cell evaluates twice: the third evaluation of the launch is cell 2's first. Killing a
    worker there fails cell 2 only; cell 3 runs in a new launch; a second `run` resumes cell 2,
    and every cell ends with the weights of a cold run."""
    suite = write_suite(tmp_path / "warm.yaml", SUITE.format(data=digits_dir, frameworks="torch"))
    first = lbbench("run", suite, "--results", tmp_path / "w", env={"LBBENCH_FAULT": "eval:1:3"})
    assert first.returncode == 1, first.stdout[-3000:]
    summaries = {
        d.name.split("-")[0]: json.loads((d / "summary.json").read_text())
        for d in (tmp_path / "w" / "warm").iterdir()
        if (d / "summary.json").exists()
    }
    assert summaries["sgd"]["status"] == "not_reached" and summaries["kfac"]["status"] == "not_reached"
    assert summaries["lars"]["status"] == "failed" and "SIGKILL" in summaries["lars"]["reason"]
    again = lbbench("run", suite, "--results", tmp_path / "w")
    assert again.returncode == 0 and again.stdout.count("done before") == 2, again.stdout[-3000:]
    cold = lbbench("run", suite, "--results", tmp_path / "c", "--cold")
    assert cold.returncode == 0
    assert _digests(tmp_path / "w") == _digests(tmp_path / "c")


def test_launch_groups_share_np_and_framework(tmp_path):
    base = SUITE.format(data="/nonexistent", frameworks="torch, tf").replace("workers: [2]", "workers: [1, 2]")
    from lbbench.suite import expand, load_suite

    runs = expand(load_suite(write_suite(tmp_path / "g.yaml", base)))[0]
    groups = _launch_groups(runs, warm=True)
    assert sorted(len(g) for g in groups) == [3, 3, 3, 3]
    assert all(len({(r.np, r.framework) for _, r in g}) == 1 for g in groups)
    assert sorted(k for g in groups for k, _ in g) == list(range(1, 13))
    assert [len(g) for g in _launch_groups(runs, warm=False)] == [1] * 12
    assert spec_from  # the helper module is importable here (used by other launch tests)

"""The shared driver (lbbench/worker/driver.py) through a real one-rank PyTorch worker: MLPerf's
block structure with an evaluation every 2 epochs, one metrics row per step sample and epoch,
and a typed summary whose numbers agree with the rows."""

from __future__ import annotations

import json

import pytest

from helpers import assert_mlperf_compliant, run_single, spec_from

pytestmark = pytest.mark.slow

SUITE = """
name: drv
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 3,
            eval_every: 2, target_top1: 0.999}}
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix: {{methods: [{{name: sgd}}], global_batch: [256], workers: [1]}}
run: {{checkpoint_every: 0}}
"""


def test_blocks_rows_and_summary(tmp_path, digits_dir):
    spec = spec_from(SUITE.format(data=digits_dir), tmp_path)
    s = run_single(spec, tmp_path / "run")
    log = [
        json.loads(line.split(":::MLLOG ", 1)[1]) for line in (tmp_path / "run" / "mllog.txt").read_text().splitlines()
    ]
    keys = [e["key"] for e in log]
    assert keys.count("run_start") == keys.count("run_stop") == 1
    blocks = [
        (e["metadata"]["first_epoch_num"], e["metadata"]["epoch_count"]) for e in log if e["key"] == "block_start"
    ]
    assert blocks == [(1, 2), (3, 1)]  # evaluate after epochs 2 and 3 (the last)
    assert [e["metadata"]["epoch_num"] for e in log if e["key"] == "eval_accuracy"] == [2, 3]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and [r["top1"] is not None for r in epochs] == [False, True, True]
    assert s.status == "not_reached" and s.epochs_run == 3 and s.steps_run == 3 * spec.steps_per_epoch
    assert s.samples_run == s.steps_run * 256 and s.best_top1 == max(r["top1"] for r in epochs if r["top1"])
    assert s.ranks_agree and s.epochs_to_target is None and s.time_to_target_valid
    assert s.time_parts_s is not None and s.time_parts_s["eval"] > 0
    assert_mlperf_compliant(tmp_path / "run" / "mllog.txt")

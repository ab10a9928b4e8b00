"""The ImageNet workload's whole path on generated JPEGs, 2 ranks, both frameworks: JPEG decode,
the random-resized crop to 224 (crop-only decode), evaluation's resize to 256 and centre crop
224, ResNet-50 v1.5 - a few real steps and an evaluation, an MLPerf-clean log."""

from __future__ import annotations

import pytest

from lbbench.store.metrics import read_metrics
from lbbench.store.summary import read_summary

from helpers import assert_mlperf_compliant, lbbench, write_suite

SUITE = """
name: inpath
workload:
  name: imagenet
  classes: 4
  data: {{kind: folder, path: "{data}", train_samples: 32, eval_samples: 8}}
  max_epochs: 1
  eval_every: 1
lr: {{rule: linear, base_lr: 0.1, base_batch: 256, warmup_epochs: 0}}
matrix:
  methods: [{{name: sgd}}]
  global_batch: [16]
  workers: [2]
  frameworks: [torch, tf]
run: {{eval_batch: 4, checkpoint_every: 0}}
"""


@pytest.mark.slow
def test_resnet50_trains_on_imagenet_shaped_jpegs(tmp_path):
    data = tmp_path / "jpeg"
    p = lbbench("data", "synthetic-jpeg", "--out", data, "--classes", "4", "--per-class", "8", "--val-per-class", "2")
    assert p.returncode == 0, p.stderr
    suite = write_suite(tmp_path / "inpath.yaml", SUITE.format(data=data))
    p = lbbench("run", suite, "--results", tmp_path / "res", timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = sorted(d.parent for d in (tmp_path / "res" / "inpath").glob("*/run.yaml"))
    assert len(runs) == 2
    for rdir in runs:
        s = read_summary(rdir)
        assert s is not None and s.epochs_run == 1 and s.steps_run == 2, rdir.name
        assert s.best_top1 is not None and 0.0 <= s.best_top1 <= 1.0
        assert s.train_gflop_per_image == pytest.approx(24.5, rel=0.01)  # ResNet-50 at 224 x 224 (4 outputs)
        epochs = [r for r in read_metrics(rdir / "metrics.jsonl") if r["kind"] == "epoch"]
        assert epochs and epochs[0]["train_loss"] > 0
        assert_mlperf_compliant(rdir / "mllog.txt")

"""The data's identity is checked before anything launches and is part of a run's identity
whenever the data is not the workload's canonical set (a 9-class copy of digits once got the
real run's id and was later taken for it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lbbench.data.layout import FINGERPRINT_CACHE, data_stats
from lbbench.suite import SuiteError, expand, load_suite
from lbbench.workloads import WORKLOADS

from helpers import lbbench, write_suite

SUITE = """
name: ident
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"{extra}}}, max_epochs: 1}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 256}}
matrix: {{methods: [{{name: sgd}}], global_batch: [64], workers: [2]}}
"""


def _copy(digits_dir: Path, tmp: Path) -> Path:
    out = tmp / "data"
    shutil.copytree(digits_dir, out, ignore=shutil.ignore_patterns(FINGERPRINT_CACHE))
    return out


def _runs(tmp: Path, data: Path, extra: str = ""):
    suite = write_suite(tmp / "s.yaml", SUITE.format(data=data, extra=extra))
    return expand(load_suite(suite), check_data=True)[0]


def test_canonical_digits_are_recognised_and_keep_the_id(digits_dir, tmp_path):
    stats = data_stats(digits_dir)
    assert stats.structure() == WORKLOADS["digits"].data_structure
    assert (stats.train.total, stats.val.total) == (1536, 261)
    (run,) = _runs(tmp_path, digits_dir)
    assert run.data.canonical and run.data.fingerprint == stats.fingerprint()
    # a copy at another path is the same data: the same run
    (again,) = _runs(tmp_path, _copy(digits_dir, tmp_path))
    assert again.run_id == run.run_id


def test_missing_class_is_refused_before_launch_naming_path_and_counts(digits_dir, tmp_path):
    data = _copy(digits_dir, tmp_path)
    shutil.rmtree(data / "train" / "09")
    shutil.rmtree(data / "val" / "09")
    suite = write_suite(tmp_path / "s.yaml", SUITE.format(data=data, extra=""))
    p = lbbench("run", suite, "--results", tmp_path / "r")
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"{data / 'train'} holds 9 class folders but the model has 10 outputs" in p.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("run.yaml"))


def test_extra_class_and_mismatched_splits_are_refused(digits_dir, tmp_path):
    data = _copy(digits_dir, tmp_path)
    shutil.copytree(data / "train" / "09", data / "train" / "10")
    with pytest.raises(SuiteError, match="11 class folders"):
        _runs(tmp_path, data)
    shutil.move(data / "train" / "10", tmp_path / "moved")
    shutil.move(data / "val" / "09", data / "val" / "99")
    with pytest.raises(SuiteError, match="different class folders: 09, 99"):
        _runs(tmp_path, data)


def test_wrong_image_count_names_both_counts(digits_dir, tmp_path):
    data = _copy(digits_dir, tmp_path)
    next((data / "val" / "03").iterdir()).unlink()
    with pytest.raises(SuiteError, match=r"val holds 260 images but workload 'digits' expects 261"):
        _runs(tmp_path, data)
    # a suite that names its set's counts may run on it, under a run id of its own
    (run,) = _runs(tmp_path, data, extra=", train_samples: 1536, eval_samples: 260")
    assert not run.data.canonical
    (canon,) = _runs(tmp_path, digits_dir)
    assert run.run_id != canon.run_id


def test_same_counts_other_classes_get_another_run_id(digits_dir, tmp_path):
    """Renamed class folders: the counts match, the data does not; the id must differ."""
    data = _copy(digits_dir, tmp_path)
    for split in ("train", "val"):
        (data / split / "00").rename(data / split / "zero")
    (run,) = _runs(tmp_path, data)
    (canon,) = _runs(tmp_path, digits_dir)
    assert not run.data.canonical and run.data.fingerprint != canon.data.fingerprint
    assert run.run_id != canon.run_id
    # the fingerprint is recorded in run.yaml
    run.save(tmp_path / "run.yaml")
    assert yaml.safe_load((tmp_path / "run.yaml").read_text())["data"]["fingerprint"] == run.data.fingerprint


def test_fingerprint_cache_follows_changes(digits_dir, tmp_path):
    data = _copy(digits_dir, tmp_path)
    before = data_stats(data)
    assert (data / FINGERPRINT_CACHE).is_file()
    victim = next((data / "train" / "05").iterdir())
    shutil.copy(victim, data / "train" / "05" / "extra.png")
    after = data_stats(data)
    assert after.train.images[5] == before.train.images[5] + 1
    assert after.fingerprint() != before.fingerprint()
    # a read-only copy is fingerprinted without its cache
    (data / FINGERPRINT_CACHE).unlink()
    data.chmod(0o555)
    try:
        assert data_stats(data) == after
    finally:
        data.chmod(0o755)

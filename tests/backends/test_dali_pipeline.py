"""The DALI pipeline both backends share: its output does not depend on the number of DALI
threads (so a worker may size them from its allocation), training crops are decoded as regions
of interest, and the thread count follows the worker's CPU share."""

from __future__ import annotations

import numpy as np
import pytest

from lbbench.backends import dali_pipeline as dp


@pytest.fixture
def jpegs(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(24):
        f = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (40 + i, 56, 3), dtype=np.uint8)).save(f, quality=90)
        files.append(str(f))
    return files


def _batches(files, threads, train, augment, n=3, batch=8):
    dp.DALI_THREADS = threads
    feed = iter([np.arange(k * batch, (k + 1) * batch) % len(files) for k in range(n + 4)])
    pipe = dp.pipeline(dp.FileBatches(files, [0] * len(files), feed), batch, 32, train, augment, seed=11, gpu=None)
    return [np.array(pipe.run()[0].as_tensor()) for _ in range(n)]


@pytest.mark.parametrize("train,augment", [(True, "imagenet"), (False, "imagenet"), (True, "none")])
def test_outputs_do_not_depend_on_the_thread_count(jpegs, train, augment):
    old = dp.DALI_THREADS
    try:
        one = _batches(jpegs, 1, train, augment)
        for threads in (2, 3):
            assert all(np.array_equal(a, b) for a, b in zip(one, _batches(jpegs, threads, train, augment)))
    finally:
        dp.DALI_THREADS = old
    assert one[0].shape == (8, 3, 32, 32) and np.isfinite(one[0]).all()


def test_random_crops_differ_between_batches_and_seeds(jpegs):
    old = dp.DALI_THREADS
    try:
        a = _batches(jpegs, 2, True, "imagenet", n=3)
    finally:
        dp.DALI_THREADS = old
    # the same 8 files in batches 0 and 3 of a 24-file cycle would be needed for equality; here
    # batches hold different files and random crops: no two batches alike
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])


def test_threads_follow_the_workers_share_of_the_cpus(monkeypatch):
    old = dp.DALI_THREADS
    try:
        monkeypatch.delenv("LBBENCH_DALI_THREADS", raising=False)
        cpus = len(__import__("os").sched_getaffinity(0))
        assert dp.use_threads(1) == cpus
        assert dp.use_threads(cpus * 4) == 1  # never below one
        monkeypatch.setenv("LBBENCH_DALI_THREADS", "5")
        assert dp.use_threads(1) == 5 and dp.DALI_THREADS == 5
    finally:
        dp.DALI_THREADS = old

"""The DALI pipeline both backends share: DALI's C++ reader delivers each chosen file's exact
bytes, and Python looks at a file once; its output does not depend on the number of DALI
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
    source = dp.FileBatches(dp.Files(files, [0] * len(files)), feed)
    pipe = dp.pipeline(source, batch, 32, train, augment, seed=11, gpu=None)
    return [np.array(pipe.run()[0].as_tensor()) for _ in range(n)]


def test_the_reader_delivers_the_chosen_files_bytes_and_python_looks_at_each_once(jpegs, monkeypatch):
    from nvidia.dali import fn, pipeline_def, types

    looked = []
    read = dp._read
    monkeypatch.setattr(dp, "_read", lambda path: looked.append(path) or read(path))
    files = dp.Files(jpegs, list(range(len(jpegs))))
    order = [np.array([5, 0, 23, 7]), np.array([7, 5, 1, 2]), np.array([23, 0, 1, 2])]
    source = dp.FileBatches(files, iter(order))

    @pipeline_def(batch_size=4, num_threads=2, device_id=None, prefetch_queue_depth=1)
    def raw():
        paths, labels = fn.external_source(source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT32])
        return fn.io.file.read(paths), labels

    pipe = raw()
    pipe.build()
    for idx in order:
        data, labels = pipe.run()
        for k, i in enumerate(idx):
            assert np.array(data.at(k)).tobytes() == open(jpegs[i], "rb").read()
            assert int(np.array(labels.at(k))[0]) == i
    assert sorted(looked) == sorted(jpegs[i] for i in (0, 1, 2, 5, 7, 23))  # each once, when first chosen


def test_a_damaged_file_is_named_when_first_chosen(jpegs):
    from lbbench.data.check import UndecodableImage

    with open(jpegs[3], "r+b") as f:
        f.truncate(200)  # no end-of-image marker
    files = dp.Files(jpegs, [0] * len(jpegs))
    files.path(2)
    with pytest.raises(UndecodableImage, match=f"cannot decode {jpegs[3]}: truncated JPEG"):
        files.path(3)


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

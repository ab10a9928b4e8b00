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


def test_an_epoch_read_by_the_file_reader_gives_the_images_the_external_source_gives(jpegs):
    """Once every file of an epoch has been looked at, DALI's file reader reads the epoch from
    its list; the crops and flips must not change (a resumed run's first epoch goes through
    external_source where the uninterrupted run's went through the reader)."""
    files = dp.Files(jpegs, [i % 5 for i in range(len(jpegs))])
    rng = np.random.default_rng(2)
    batches = [rng.permutation(len(jpegs))[:8] for _ in range(4)]
    assert files.listed(batches) is None  # nothing looked at yet
    fed = dp.pipeline(dp.FileBatches(files, dp.endless(batches)), 8, 32, True, "imagenet", seed=3, gpu=None)
    via_python = [fed.run() for _ in batches]
    listed = files.listed(batches)  # the feed has looked at every chosen file now
    assert listed is not None and not files.checked[np.setdiff1d(np.arange(len(jpegs)), np.concatenate(batches))].any()
    read = dp.pipeline(listed, 8, 32, True, "imagenet", seed=3, gpu=None)
    for (x, y), (rx, ry) in zip(via_python, (read.run() for _ in batches)):
        assert np.array_equal(np.array(x.as_tensor()), np.array(rx.as_tensor()))
        assert np.array_equal(np.array(y.as_tensor()), np.array(ry.as_tensor()))


def test_the_coming_epochs_files_are_looked_at_ahead_and_a_damaged_one_is_named(jpegs):
    from lbbench.data.check import UndecodableImage

    files = dp.Files(jpegs, [0] * len(jpegs))
    coming = [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]
    ahead = dp.CheckAhead(files, coming)
    ahead.thread.join()
    assert ahead.done() and files.listed(coming) is not None and not files.checked[0]
    with open(jpegs[10], "r+b") as f:
        f.truncate(200)
    ahead = dp.CheckAhead(files, [np.array([9, 10])])
    ahead.thread.join()
    with pytest.raises(UndecodableImage, match=f"cannot decode {jpegs[10]}: truncated JPEG"):
        ahead.done()


def test_an_epoch_is_read_from_its_list_once_the_epoch_before_looked_at_its_files(digits_dir, tmp_path):
    """EpochLoaders: epoch 1 looks at its files as it goes; meanwhile epoch 2's files are looked
    at in a thread, so epoch 2 is read by DALI's file reader; a file damaged in epoch 2 (and not
    in epoch 1) is named at the boundary, before epoch 2 trains."""
    import shutil

    from lbbench.data.check import UndecodableImage
    from lbbench.data.layout import FINGERPRINT_CACHE, list_split
    from lbbench.worker.sampling import epoch_micro_batches, epoch_plans

    from helpers import small_spec

    data = tmp_path / "digits"  # a copy: a file gets damaged below
    shutil.copytree(digits_dir, data, ignore=shutil.ignore_patterns(FINGERPRINT_CACHE))
    spec = small_spec(tmp_path, data, "sgd", np=2, accum=1).model_copy(update={"max_epochs": 3})
    paths, labels, _ = list_split(f"{data}/train")
    built: list[bool] = []

    def make(source, seed):
        built.append(isinstance(source, dp.ListedFiles))
        if isinstance(source, dp.FileBatches):  # DALI takes the epoch's batches from the feed
            for _ in range(epoch_micro_batches(spec, 1)):
                source()
        return iter(range(10**6))

    files = dp.Files(paths, labels)
    loaders = dp.EpochLoaders(spec, 1, 1, files, dp.FileBatches, make)
    for _ in range(epoch_micro_batches(spec, 1)):
        next(loaders)
    assert loaders.ahead is not None
    loaders.ahead.thread.join()
    next(loaders)
    assert built == [False, True]

    plans = epoch_plans(spec, 1, 1)
    first, second = (set(np.concatenate(next(plans)[1]).tolist()) for _ in range(2))
    victim = paths[min(second - first)]
    with open(victim, "r+b") as f:
        f.truncate(30)
    files = dp.Files(paths, labels)
    loaders = dp.EpochLoaders(spec, 1, 1, files, dp.FileBatches, make)
    for _ in range(epoch_micro_batches(spec, 1)):
        next(loaders)
    loaders.ahead.thread.join()
    with pytest.raises(UndecodableImage, match=f"cannot decode {victim}"):
        next(loaders)


def test_a_file_damaged_past_its_header_is_named_when_the_reader_meets_it(tmp_path):
    """On the listed read DALI meets a file whose header was fine: when its decoder fails, the
    file is found among the batches around the failure (decoded with Pillow) and named."""
    from PIL import Image

    from lbbench.data.check import UndecodableImage

    rng = np.random.default_rng(3)
    paths = []
    for i in range(12):
        f = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(f)
        paths.append(str(f))
    files = dp.Files(paths, [0] * 12)
    files.check_all()
    victim = tmp_path / "9.png"  # in the third batch
    b = bytearray(victim.read_bytes())
    b[45:-20] = bytes([0x55]) * (len(b) - 65)  # header and end intact: only a decoder notices
    victim.write_bytes(bytes(b))
    listed = files.listed([np.arange(k * 4, (k + 1) * 4) for k in range(3)])
    assert listed is not None
    pipe = dp.pipeline(listed, 4, 16, True, "imagenet", seed=0, gpu=None)
    with pytest.raises(Exception) as failed:
        for _ in range(3):
            pipe.run()
            listed.ran()
    named = dp.named_failure(failed.value, listed)
    assert isinstance(named, UndecodableImage) and named.path == str(victim)

"""The DALI pipeline both backends feed from (decode, augment, normalise): the same
augmentation and evaluation preprocessing whatever the framework. Only the output layout
differs - CHW for PyTorch, HWC for TensorFlow.

lbbench's GlobalBatchSampler chooses the files (the same sample order for every np, see
lbbench/worker/sampling.py). An epoch whose files have all been looked at once (see Files) is read
by DALI's C++ file reader (``fn.readers.file``) from the epoch's file list, in that order,
reading ahead in a thread of its own as DALI's reference pipeline does; otherwise the paths
enter through external_source and ``fn.io.file.read`` reads them in DALI's worker threads,
after Python has looked at each. Both give the same images (op_seeds). Decoding is on the CPU
here and "mixed" (GPU) on clusters. Training with ImageNet augmentation decodes only the random crop
(``decoders.image_random_crop``: a JPEG's region of interest, as NVIDIA's MLPerf pipelines do)
instead of the whole image. DALI's worker threads come from the worker's CPU allocation
(``use_threads``); its outputs do not depend on their number (tests/backends/test_dali_pipeline.py).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np

from lbbench.data.check import UndecodableImage, culprit, header_problem
from lbbench.spec import RunSpec
from lbbench.worker.sampling import augment_seed, epoch_micro_batches, epoch_plans

DALI_THREADS = 2  # per pipeline; the workers set it from their allocation (use_threads)
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def use_threads(local_workers: int) -> int:
    """DALI threads per pipeline: the CPUs this process may run on (its affinity mask - what
    Slurm's cgroup or `--cpus-per-task` binding leaves it) shared by the workers of the node,
    at least 1; LBBENCH_DALI_THREADS overrides. Returns the number set."""
    global DALI_THREADS
    given = os.environ.get("LBBENCH_DALI_THREADS")
    if given:
        DALI_THREADS = max(1, int(given))
    else:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        DALI_THREADS = max(1, cpus // max(1, local_workers))
    return DALI_THREADS


def _read(path: str) -> np.ndarray:
    """A file's bytes, refused when visibly damaged: DALI would fail (or crash) without a name."""
    data = np.fromfile(path, dtype=np.uint8)
    why = header_problem(data)
    if why:
        raise UndecodableImage(path, why)
    return data


class Files:
    """A split's files and labels, as the pipelines hand them to DALI: the file's path, which
    DALI's C++ readers open. A file is looked at in Python once per run (a Files lives as long
    as the run's loader; its bytes read and its header checked: DALI's decoders fail without a
    name, or crash, on damaged files): the first time the sampler chooses it, or ahead of the
    epoch that will (CheckAhead); from then on only its path is passed, and an epoch whose
    files have all been looked at is read from its list (``listed``)."""

    def __init__(self, files: list[str], labels: list[int] | np.ndarray):
        self.paths = files
        self.labels = np.asarray(labels, dtype=np.int32)
        self.checked = np.zeros(len(files), dtype=bool)

    def path(self, i: int) -> np.ndarray:
        """File ``i``'s path as DALI's file reader takes it (UTF-8 bytes)."""
        if not self.checked[i]:
            _read(self.paths[i])
            self.checked[i] = True
        return np.frombuffer(self.paths[i].encode(), dtype=np.uint8)

    def label(self, i: int) -> np.ndarray:
        return self.labels[i : i + 1]

    def check_all(self) -> None:
        """Look at every file now (what the first epoch does as it goes)."""
        self.check(np.flatnonzero(~self.checked))

    def check(self, indices: np.ndarray) -> None:
        for i in indices[~self.checked[indices]]:
            self.path(int(i))

    def listed(self, batches: list[np.ndarray]) -> ListedFiles | None:
        """The epoch's files for DALI's file reader, if every one has been looked at; else None
        (the epoch is fed through external_source, which looks at each as it goes)."""
        chosen = np.concatenate(batches)
        return ListedFiles(self, chosen, len(batches[0])) if self.checked[chosen].all() else None


class CheckAhead:
    """Looks at the files of the coming epoch in a thread while this one trains, so that the
    coming epoch can be read by DALI's file reader (a rank meets files it has not seen for many
    epochs: with np ranks a rank's epoch holds 1/np of the files). A damaged file found here is
    raised when the coming epoch is built, naming it."""

    def __init__(self, files: Files, batches: list[np.ndarray]):
        self.error: BaseException | None = None
        chosen = np.unique(np.concatenate(batches))
        self.thread = threading.Thread(target=self._run, args=(files, chosen), daemon=True, name="lbbench-check")
        self.thread.start()

    def _run(self, files: Files, chosen: np.ndarray) -> None:
        try:
            files.check(chosen)
        except BaseException as e:  # raised in the training thread by done()
            self.error = e

    def done(self) -> bool:
        """Whether every file has been looked at (without waiting); raises what it found."""
        if self.thread.is_alive():
            return False
        if self.error is not None:
            raise self.error
        return True


class ListedFiles:
    """An epoch's files and labels in training order, as DALI's file reader takes them."""

    def __init__(self, files: Files, chosen: np.ndarray, batch: int):
        self.paths = [files.paths[i] for i in chosen]
        self.labels = [int(x) for x in files.labels[chosen]]
        self.batch, self.taken = batch, 0

    def ran(self) -> None:
        """A batch has come out of the pipeline."""
        self.taken += 1

    def recent_files(self) -> list[str]:
        """The files of the batches DALI may be decoding (the reader's and the pipeline's
        prefetch), to name a culprit."""
        return self.paths[self.taken * self.batch : (self.taken + 4) * self.batch]


class FileBatches:
    """Feeds DALI (path, label) batches from an index iterator."""

    def __init__(self, files: Files, indices: Iterator[np.ndarray]):
        self.files, self.indices = files, indices
        self.fed: deque[np.ndarray] = deque(maxlen=8)  # DALI prefetches a few batches, never 8

    def __call__(self):
        idx = next(self.indices)
        self.fed.append(idx)
        return ([self.files.path(i) for i in idx], [self.files.label(i) for i in idx])

    def ran(self) -> None:
        """A batch has come out of the pipeline (the feed knows what DALI took)."""

    def recent_files(self) -> list[str]:
        """The files of the batches DALI may be decoding, newest first (to name a culprit)."""
        return [self.files.paths[i] for idx in reversed(self.fed) for i in idx]


class SampleSource:
    """The same feed, one sample per call, as DALI's TensorFlow plugin requires (its
    DALIDatasetWithInputs accepts only single-output, per-sample external sources): two
    sources, path and label, that look up sample ``idx_in_batch`` of batch ``iteration`` in
    one shared plan, whatever order DALI calls them in."""

    def __init__(self, files: Files, indices: Iterator[np.ndarray]):
        self.files, self.indices = files, indices
        self.batches: dict[int, np.ndarray] = {}
        self.last = -1

    def _index(self, info) -> int:
        while self.last < info.iteration:
            self.last += 1
            self.batches[self.last] = next(self.indices)
            self.batches.pop(self.last - 8, None)  # DALI prefetches a few batches, never 8
        return int(self.batches[info.iteration][info.idx_in_batch])

    def encoded(self, info) -> np.ndarray:
        return self.files.path(self._index(info))

    def label(self, info) -> np.ndarray:
        return self.files.label(self._index(info))

    def ran(self) -> None:
        """A batch has come out of the pipeline (the plan knows what DALI took)."""

    def recent_files(self) -> list[str]:
        return [self.files.paths[i] for it in sorted(self.batches, reverse=True) for i in self.batches[it]]


class EpochLoaders:
    """Training input under random augmentation: a pipeline per epoch, seeded by (seed, epoch,
    rank) (lbbench/worker/sampling.py augment_seed), so that a run resumed at an epoch boundary
    equals the uninterrupted one. An epoch whose files have all been looked at is read from its
    list (ListedFiles), any other is fed by the backend's ``fed(files, micro-batches)`` (which
    looks at each file as it goes); ``make(source, seed)`` builds the backend's loader. While an
    epoch trains, the next one's files are looked at in a thread (CheckAhead), so that it can be
    read from its list."""

    def __init__(
        self,
        spec: RunSpec,
        rank: int,
        epoch: int,
        files: Files,
        fed: Callable[[Files, Iterator[np.ndarray]], Any],
        make: Callable[[Any, int], Any],
    ):
        self.spec, self.rank, self.files, self.fed, self.make = spec, rank, files, fed, make
        self.plans = epoch_plans(spec, rank, epoch)
        self.coming = next(self.plans)
        self.ahead: CheckAhead | None = None
        self.left, self.current = 0, cast(Any, None)

    def __next__(self) -> Any:
        if self.left == 0:
            epoch, batches = self.coming
            if self.ahead is not None:
                self.ahead.done()  # raises a damaged file it found
            source = self.files.listed(batches) or self.fed(self.files, endless(batches))
            self.current = self.make(source, augment_seed(self.spec, epoch, self.rank))
            self.left = epoch_micro_batches(self.spec, epoch)
            self.coming = next(self.plans)
            if self.coming[0] <= self.spec.max_epochs:
                self.ahead = CheckAhead(self.files, self.coming[1])
        self.left -= 1
        return next(self.current)


def endless(batches: list[np.ndarray]) -> Iterator[np.ndarray]:
    """An epoch's micro-batches, then the last one repeated: only to fill the pipeline's
    prefetch; the loader takes exactly the epoch's."""
    return itertools.chain(batches, itertools.repeat(batches[-1]))


def named_failure(error: BaseException, source: FileBatches | SampleSource | ListedFiles) -> BaseException:
    """The error to raise for a failed DALI run: ours where the source refused a file (it may
    arrive wrapped in DALI's or TensorFlow's error), else the file Pillow cannot decode among
    the recent batches, else the original error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, UndecodableImage):
            return seen
        seen = seen.__cause__ or seen.__context__
    named = re.search(r"cannot decode (\S+): ([^\n]*)", str(error))
    if named:  # through TensorFlow only the message survives
        return UndecodableImage(named[1], named[2])
    return culprit(source.recent_files()) or error


def op_seeds(seed: int) -> tuple[int, int]:
    """The seeds of the training augmentation's random operators (crop, flip), from the
    pipeline's seed. Given explicitly because DALI otherwise draws them from the pipeline's seed
    in the graph's operator order: the same crops would then depend on which operators read the
    files. With these, a crop and a flip depend only on the seed and the sample's place in its
    batch - whatever reads the files (`lbbench bench input` checks its same-work reference
    against the training pipeline image for image)."""
    crop, flip = np.random.default_rng([seed, 0xC409]).integers(2**31 - 1, size=2)
    return int(crop), int(flip)


def pipeline(
    source,
    batch: int,
    size: int,
    train: bool,
    augment: str,
    seed: int,
    gpu: int | None,
    layout: str = "CHW",
    build: bool = True,
    roi: bool = True,
):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=DALI_THREADS, device_id=gpu, seed=seed, prefetch_queue_depth=2)
    def pipe():
        if isinstance(source, ListedFiles):  # in C++, reading ahead in a thread of its own
            encoded, labels = fn.readers.file(
                files=source.paths, labels=source.labels, random_shuffle=False, name="Reader"
            )
        else:
            if isinstance(source, SampleSource):
                paths = fn.external_source(source=source.encoded, batch=False, dtype=types.UINT8)
                labels = fn.external_source(source=source.label, batch=False, dtype=types.INT32)
            else:
                paths, labels = fn.external_source(
                    source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT32]
                )
            encoded = fn.io.file.read(paths)  # in C++, in DALI's threads
        device = "cpu" if gpu is None else "mixed"
        crop_seed, flip_seed = op_seeds(seed)
        mirror = False
        if train and augment == "imagenet":
            # Inception-style crop (area 8-100%, aspect 3/4-4/3, as random_resized_crop), decoding
            # only that region, then resized to the training size (roi=False: the whole image
            # decoded, then cropped - kept for `lbbench bench input --decode full`)
            if roi:
                images = fn.decoders.image_random_crop(encoded, device=device, output_type=types.RGB, seed=crop_seed)
                images = fn.resize(images, resize_x=size, resize_y=size)
            else:
                images = fn.decoders.image(encoded, device=device, output_type=types.RGB)
                images = fn.random_resized_crop(images, size=(size, size), seed=crop_seed)
            mirror = fn.random.coin_flip(probability=0.5, seed=flip_seed)
        elif augment == "imagenet":  # evaluation: resize the shorter side, then centre-crop
            images = fn.decoders.image(encoded, device=device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=round(size / 0.875))
        else:
            images = fn.decoders.image(encoded, device=device, output_type=types.RGB)
            images = fn.resize(images, resize_x=size, resize_y=size)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout=layout, crop=(size, size), mean=MEAN, std=STD, mirror=mirror
        )
        return images, labels

    p = pipe()
    if build:  # the TensorFlow plugin builds the pipeline itself
        p.build()
    return p

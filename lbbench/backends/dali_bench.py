"""`lbbench bench input`: the training input pipeline alone (read, decode, crop, normalise), in
images/s, for each DALI thread count and decode mode - what one worker's input can feed,
whether more threads help on this machine, and what decoding only the crop saves. The
variants are measured round-robin, one round after another, so a noisy machine slows all of
them alike, and each round starts one variant later (on this 2-core machine one and the same
pipeline measured 0.93-1.0x depending on its place in the round). Each round draws its crops
from a seed of its own (seed + round), so no variant is timed on one draw of crop windows.
The headline is images / time over the timed batches of all rounds."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from lbbench.backends import dali_pipeline as dp
from lbbench.data.layout import list_split


def run(
    data_dir: Path,
    batch: int,
    size: int,
    threads: list[int],
    augment: str,
    batches: int,
    rounds: int,
    decode: tuple[str, ...] = ("roi",),
    seed: int = 0,
) -> dict[str, Any]:
    """Images/s per (decode, threads): ``decode`` "roi" decodes only the training crop, the
    files read by DALI's file reader from the epoch's list (every epoch whose files have been
    looked at, see dali_pipeline.CheckAhead), "full" the same with the whole image decoded
    before cropping (the pipeline before region-of-interest decoding), "roi-fed" is "roi" with
    the paths fed through external_source (an epoch whose files were not all looked at ahead),
    "first-epoch" is "roi-fed" as a file's first use runs it, the file also read and its header
    checked in Python, "reference" is DALI's own reference ImageNet training pipeline - its C++
    file reader over the folder (``fn.readers.file``, shuffled), then the same crop decode,
    resize and normalisation - the yardstick for lbbench's pipeline, whose files its sampler
    chooses - and "reference-same" is that reference doing the same work as "roi": reading the
    files lbbench's sampler chose, in that order, with the same crop and flip seeds (the same
    images, tested), defined here independently of lbbench's pipeline."""
    files, labels, _ = list_split(f"{data_dir}/train")
    if not files:
        raise FileNotFoundError(f"{data_dir}/train holds no images")
    checked = dp.Files(files, labels)
    checked.check_all()
    order = np.random.default_rng(seed).permutation(len(files))

    def chosen(k: int) -> np.ndarray:
        return order[np.arange(k * batch, (k + 1) * batch) % len(files)]

    def feed():
        k = 0
        while True:
            yield chosen(k)
            k += 1

    # what the listed variants read: the batches the warm-up, the timed run and the prefetch take
    listed = checked.listed([chosen(k) for k in range(batches + 2 + 2)])
    assert listed is not None  # every file was looked at above

    keys = [f"{d}/{n}" for d in decode for n in threads]
    timed: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    old = dp.DALI_THREADS
    try:
        for r in range(rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                d, n = key.rsplit("/", 1)
                dp.DALI_THREADS = int(n)
                if d == "reference":
                    pipe = reference_pipeline(data_dir, batch, size, seed + r)
                elif d == "reference-same":
                    pipe = same_work_reference(listed.paths, listed.labels, batch, size, seed + r)
                else:
                    source: dp.FileBatches | dp.ListedFiles = listed
                    if d in ("roi-fed", "first-epoch"):
                        source = dp.FileBatches(_FirstUse(files, labels) if d == "first-epoch" else checked, feed())
                    pipe = dp.pipeline(source, batch, size, True, augment, seed=seed + r, gpu=None, roi=d != "full")
                for _ in range(2):  # warm-up: the prefetch queue fills, buffers are allocated
                    pipe.run()
                t0 = time.perf_counter()
                for _ in range(batches):
                    pipe.run()
                timed[key].append((batches * batch, time.perf_counter() - t0))
                del pipe
    finally:
        dp.DALI_THREADS = old
    rates = {k: sum(i for i, _ in r) / sum(t for _, t in r) for k, r in timed.items()}
    base = rates[keys[0]]
    return dict(
        benchmark="input pipeline alone (DALI, CPU): read, decode (crop region only for imagenet), resize, normalise",
        decode_variants=list(decode),
        data_dir=str(data_dir),
        images=len(files),
        batch=batch,
        size=size,
        augment=augment,
        rounds=rounds,
        batches_per_round=batches,
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        results={
            k: dict(images_per_s=rates[k], per_round=[i / t for i, t in timed[k]], relative_to_first=rates[k] / base)
            for k in keys
        },
    )


class _FirstUse(dp.Files):
    """Files as their first use sees them, every time: read and checked in Python, then DALI reads."""

    def path(self, i: int) -> np.ndarray:
        self.checked[i] = False
        return super().path(i)


def reference_pipeline(data_dir: Path, batch: int, size: int, seed: int):
    """DALI's reference ImageNet training pipeline (its documentation's and NVIDIA's examples'):
    the C++ file reader over the class folders, shuffled, crop-only decode, resize, flip and
    normalise; the random operators' seeds drawn by DALI from the pipeline's."""
    return _reference(dict(file_root=f"{data_dir}/train", random_shuffle=True), batch, size, seed, explicit=False)


def same_work_reference(paths: list[str], labels: list[int], batch: int, size: int, seed: int):
    """DALI's reference pipeline reading ``paths`` in order, with the training pipeline's crop
    and flip seeds (dali_pipeline.op_seeds): the images lbbench's pipeline makes from the same
    files."""
    reader = dict(files=paths, labels=labels, random_shuffle=False)
    return _reference(reader, batch, size, seed, explicit=True)


def _reference(reader: dict[str, Any], batch: int, size: int, seed: int, explicit: bool):
    """The reference pipeline over ``reader`` (``fn.readers.file``'s arguments: its C++ reader
    reads ahead in a thread of its own)."""
    from nvidia.dali import fn, pipeline_def, types

    crop_seed: dict[str, Any] = {"seed": dp.op_seeds(seed)[0]} if explicit else {}
    flip_seed: dict[str, Any] = {"seed": dp.op_seeds(seed)[1]} if explicit else {}

    @pipeline_def(batch_size=batch, num_threads=dp.DALI_THREADS, device_id=None, seed=seed, prefetch_queue_depth=2)
    def pipe():
        encoded, labels = fn.readers.file(name="Reader", **reader)
        images = fn.decoders.image_random_crop(encoded, device="cpu", output_type=types.RGB, **crop_seed)
        images = fn.resize(images, resize_x=size, resize_y=size)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=(size, size),
            mean=dp.MEAN,
            std=dp.STD,
            mirror=fn.random.coin_flip(probability=0.5, **flip_seed),
        )
        return images, labels

    p = pipe()
    p.build()
    return p

"""`lbbench bench input`: the training input pipeline alone (read, decode, crop, normalise), in
images/s, for each DALI thread count and decode mode - what one worker's input can feed,
whether more threads help on this machine, and what decoding only the crop saves. The
variants are measured round-robin, one round after another, so a noisy machine slows all of
them alike; the headline is images / time over the timed batches of all rounds."""

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
    """Images/s per (decode, threads): ``decode`` "roi" decodes only the training crop, "full"
    the whole image before cropping (the pipeline before region-of-interest decoding) - both
    as every epoch after a file's first use, when only its path enters DALI - "first-epoch" is
    "roi" as a file's first use runs it, the file also read and its header checked in Python,
    "reference" is DALI's own reference ImageNet training pipeline - its C++ file reader over
    the folder (``fn.readers.file``, shuffled), then the same crop decode, resize and
    normalisation - the yardstick for lbbench's pipeline, whose files its sampler chooses."""
    files, labels, _ = list_split(f"{data_dir}/train")
    if not files:
        raise FileNotFoundError(f"{data_dir}/train holds no images")
    checked = dp.Files(files, labels)
    checked.check_all()
    order = np.random.default_rng(seed).permutation(len(files))

    def feed():
        k = 0
        while True:
            yield order[np.arange(k * batch, (k + 1) * batch) % len(files)]
            k += 1

    keys = [f"{d}/{n}" for d in decode for n in threads]
    timed: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    old = dp.DALI_THREADS
    try:
        for _ in range(rounds):
            for key in keys:
                d, n = key.rsplit("/", 1)
                dp.DALI_THREADS = int(n)
                if d == "reference":
                    pipe = reference_pipeline(data_dir, batch, size, seed)
                else:
                    split = _FirstUse(files, labels) if d == "first-epoch" else checked
                    source = dp.FileBatches(split, feed())
                    pipe = dp.pipeline(source, batch, size, True, augment, seed=seed, gpu=None, roi=d != "full")
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
    the C++ file reader over the class folders, crop-only decode, resize, flip and normalise."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch, num_threads=dp.DALI_THREADS, device_id=None, seed=seed, prefetch_queue_depth=2)
    def pipe():
        encoded, labels = fn.readers.file(file_root=f"{data_dir}/train", random_shuffle=True, name="Reader")
        images = fn.decoders.image_random_crop(encoded, device="cpu", output_type=types.RGB)
        images = fn.resize(images, resize_x=size, resize_y=size)
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=(size, size),
            mean=dp.MEAN,
            std=dp.STD,
            mirror=fn.random.coin_flip(probability=0.5),
        )
        return images, labels

    p = pipe()
    p.build()
    return p

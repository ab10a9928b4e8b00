"""Input pipelines for the PyTorch worker: NVIDIA DALI over the ImageNet folder layout, or
synthetic tensors.

lbbench's GlobalBatchSampler chooses the files (so the sample order is the same for every np,
see lbbench/worker/sampling.py) and DALI does the rest: its C++ reader reads them (from the epoch's
file list, or paths entering through external_source, lbbench/backends/dali_pipeline.py), then
decode (CPU here, "mixed" = GPU decode on clusters), augmentation and normalisation.
"""

from __future__ import annotations

import numpy as np
import torch

from lbbench.backends.dali_pipeline import (
    EpochLoaders,
    FileBatches,
    Files,
    ListedFiles,
    named_failure,
    pipeline,
)
from lbbench.data.layout import check_count, list_split
from lbbench.spec import RunSpec
from lbbench.worker.sampling import (
    eval_plan,
    synthetic_eval_seed,
    synthetic_train_seed,
    train_plan,
)


class DaliLoader:
    """``next(loader)`` -> (images NCHW float32, labels int64) as torch tensors; with a GPU
    pipeline the images stay on that GPU (copied device to device, not through the host)."""

    def __init__(self, pipe, source: FileBatches | ListedFiles, gpu: int | None = None):
        self.pipe, self.source, self.gpu = pipe, source, gpu
        self.pinned = gpu is None and torch.cuda.is_available()  # a CPU pipeline feeding a GPU model

    def __next__(self):
        try:
            images, labels = self.pipe.run()
        except Exception as e:  # a damaged image: name the file (lbbench/data/check.py)
            raise named_failure(e, self.source) from e
        self.source.ran()
        y = torch.from_numpy(np.array(labels.as_tensor()).reshape(-1).astype(np.int64))
        if self.gpu is not None and hasattr(images, "as_cpu"):
            from nvidia.dali.plugin.pytorch import feed_ndarray

            t = images.as_tensor()
            x = torch.empty(t.shape(), dtype=torch.float32, device=torch.device("cuda", self.gpu))
            feed_ndarray(t, x, cuda_stream=torch.cuda.current_stream(self.gpu))
            return x, y
        if hasattr(images, "as_cpu"):
            images = images.as_cpu()
        # one copy, DALI's buffer straight into the batch tensor (no NumPy array in between);
        # page-locked when the model is on a GPU, so that the copy to it can be asynchronous
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = images.as_tensor()
        x = torch.empty(t.shape(), dtype=torch.float32, pin_memory=self.pinned)
        feed_ndarray(t, x)
        return x, y


def train_loader(spec: RunSpec, rank: int, epoch: int = 1, step: int = 0, gpu: int | None = None):
    stream = train_plan(spec, rank, epoch, step)
    if spec.data.kind == "synthetic":
        return _SyntheticLoader(spec, stream)
    files, labels, _ = list_split(f"{spec.data.path}/train")
    check_count(spec.data.path, "train", len(files), spec.data.train_samples)
    split = Files(files, labels)  # for every epoch's pipeline: a file is checked once

    def loader(source: FileBatches | ListedFiles, seed: int) -> DaliLoader:
        pipe = pipeline(source, spec.local_batch, spec.data.image_size, True, spec.data.augment, seed=seed, gpu=gpu)
        return DaliLoader(pipe, source, gpu=gpu)

    if spec.data.augment == "none":  # nothing random: one pipeline for the whole run
        return loader(FileBatches(split, stream), spec.seed * 1000 + rank)
    assert step == 0, "runs resume at epoch boundaries"
    return EpochLoaders(spec, rank, epoch, split, FileBatches, loader)


def eval_batches(spec: RunSpec, rank: int, size: int, gpu: int | None = None):
    """A callable returning this rank's evaluation batches (a fresh pass each call)."""
    shards = eval_plan(spec, rank, size)
    if spec.data.kind == "synthetic":
        g = torch.Generator().manual_seed(synthetic_eval_seed(spec))
        fixed = [_synthetic(spec, len(s), g) for s in shards]
        return lambda: iter(fixed)
    files, labels, _ = list_split(f"{spec.data.path}/val")
    check_count(spec.data.path, "val", len(files), spec.data.eval_samples)

    def forever():
        while True:
            yield from shards

    source = FileBatches(Files(files, labels), forever())
    pipe = pipeline(
        source,
        spec.eval_batch,
        spec.data.image_size,
        False,
        spec.data.augment,
        seed=spec.seed,
        gpu=gpu,
    )
    loader = DaliLoader(pipe, source, gpu=gpu)
    return lambda: (next(loader) for _ in shards)


def _synthetic(spec: RunSpec, n: int, g: torch.Generator):
    s = spec.data.image_size
    return torch.randn(n, 3, s, s, generator=g), torch.randint(0, spec.data.classes, (n,), generator=g)


class _SyntheticLoader:
    """Random images with fixed labels per sample index, so runs stay reproducible."""

    def __init__(self, spec: RunSpec, stream):
        self.spec, self.stream = spec, stream

    def __next__(self):
        idx = next(self.stream)
        g = torch.Generator().manual_seed(synthetic_train_seed(self.spec, idx))
        return _synthetic(self.spec, len(idx), g)

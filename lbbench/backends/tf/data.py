"""Input for the TensorFlow worker: DALI's TensorFlow plugin (DALIDatasetWithInputs for an epoch
fed through external sources, DALIDataset for one read from its list) over the shared pipeline
(lbbench/backends/dali_pipeline.py: the PyTorch backend's reading, decode, augmentation and
normalisation, in HWC), in lbbench's sample order; or synthetic tensors (NumPy-drawn,
reproducible, not the PyTorch backend's values - equivalence tests feed explicit batches).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lbbench.backends.dali_pipeline import (
    EpochLoaders,
    Files,
    ListedFiles,
    SampleSource,
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


def _dataset(spec: RunSpec, source: SampleSource | ListedFiles, batch: int, train: bool, seed: int, gpu: int | None):
    import nvidia.dali.plugin.tf as dali_tf

    size = spec.data.image_size
    pipe = pipeline(source, batch, size, train, spec.data.augment, seed=seed, gpu=gpu, layout="HWC", build=False)
    # a pipeline with external sources needs the plugin's WithInputs dataset, one with the
    # file reader only the plain one
    dataset = dali_tf.DALIDataset if isinstance(source, ListedFiles) else dali_tf.experimental.DALIDatasetWithInputs
    # gpu: the physical GPU (DALI's device_id); TensorFlow sees only that one, as /gpu:0
    with tf.device("/cpu:0" if gpu is None else "/gpu:0"):
        return dataset(
            pipeline=pipe,
            batch_size=batch,
            output_shapes=((batch, size, size, 3), (batch, 1)),
            output_dtypes=(tf.float32, tf.int32),
            device_id=gpu,
        )


class _Batches:
    """``next(loader)`` -> (images NHWC float32, labels int64) as TF tensors."""

    def __init__(self, dataset, source: SampleSource | ListedFiles):
        self.source = source
        try:  # TensorFlow's iterator already runs the source (prefetching)
            self.it = iter(dataset)
        except Exception as e:
            raise named_failure(e, source) from e

    def __next__(self):
        try:
            x, y = next(self.it)
        except StopIteration:
            raise
        except Exception as e:  # a damaged image: name the file (lbbench/data/check.py)
            raise named_failure(e, self.source) from e
        self.source.ran()
        return x, tf.cast(tf.reshape(y, [-1]), tf.int64)


def train_loader(spec: RunSpec, rank: int, epoch: int = 1, gpu: int | None = None):
    stream = train_plan(spec, rank, epoch)
    if spec.data.kind == "synthetic":
        return _Synthetic(spec, stream)
    files, labels, _ = list_split(f"{spec.data.path}/train")
    check_count(spec.data.path, "train", len(files), spec.data.train_samples)
    split = Files(files, labels)  # for every epoch's pipeline: a file is checked once

    def loader(source: SampleSource | ListedFiles, seed: int) -> _Batches:
        return _Batches(_dataset(spec, source, spec.local_batch, True, seed, gpu), source)

    if spec.data.augment == "none":  # nothing random: one pipeline for the whole run
        return loader(SampleSource(split, stream), spec.seed * 1000 + rank)
    return EpochLoaders(spec, rank, epoch, split, SampleSource, loader)


def eval_batches(spec: RunSpec, rank: int, size: int, gpu: int | None = None):
    shards = eval_plan(spec, rank, size)
    if spec.data.kind == "synthetic":
        rng = np.random.default_rng(synthetic_eval_seed(spec))
        fixed = [_synthetic(spec, len(s), rng) for s in shards]
        return lambda: iter(fixed)
    files, labels, _ = list_split(f"{spec.data.path}/val")
    check_count(spec.data.path, "val", len(files), spec.data.eval_samples)

    # Shards may be shorter than eval_batch at the end; DALI needs one batch size, so every
    # shard is padded to eval_batch with its own first index and the padding dropped after.
    def forever():
        while True:
            for s in shards:
                yield np.concatenate([s, np.repeat(s[:1], spec.eval_batch - len(s))])

    source = SampleSource(Files(files, labels), forever())
    loader = _Batches(_dataset(spec, source, spec.eval_batch, False, spec.seed, gpu), source)

    def one_pass():
        for s in shards:
            x, y = next(loader)
            yield x[: len(s)], y[: len(s)]

    return one_pass


def _synthetic(spec: RunSpec, n: int, rng: np.random.Generator):
    s = spec.data.image_size
    return (
        tf.constant(rng.standard_normal((n, s, s, 3), dtype=np.float32)),
        tf.constant(rng.integers(0, spec.data.classes, n), dtype=tf.int64),
    )


class _Synthetic:
    """Random images with fixed labels per first sample index (reproducible), NHWC."""

    def __init__(self, spec: RunSpec, stream):
        self.spec, self.stream = spec, stream

    def __next__(self):
        idx = next(self.stream)
        return _synthetic(self.spec, len(idx), np.random.default_rng(synthetic_train_seed(self.spec, idx)))

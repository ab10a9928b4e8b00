"""RunSpec: one fully resolved, serialisable run - the contract between the suite front end
(lbbench/suite), the launchers and the workers (docs/architecture.md).

The worker receives only the path of a RunSpec file and never re-reads the suite. The run id
is derived from the content (minus where the data happens to live), so re-running a suite
finds completed runs by id.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict


def steps_per_epoch(samples: int, global_batch: int) -> int:
    """S = ceil(N / B): every step has exactly B samples, the last one of an epoch wrapping
    around to the epoch's start (lbbench/worker/sampling.py). Defined here once."""
    return -(-samples // global_batch)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(Frozen):
    kind: Literal["folder", "synthetic"]
    path: str | None  # ImageNet layout: <path>/train/<class>/*, <path>/val/<class>/*
    image_size: int
    classes: int
    train_samples: int
    eval_samples: int
    augment: Literal["imagenet", "none"]
    # Class names + images and bytes per class (lbbench/data/layout.py); None for synthetic data
    # or a plan made without the data. Part of the run id only when the data is not the
    # workload's canonical set, so no other data set is ever mistaken for a finished run.
    fingerprint: str | None = None
    canonical: bool = True


class LrSpec(Frozen):
    schedule: Literal["poly", "polynomial", "step", "cosine", "constant"]
    peak_lr: float
    warmup_epochs: float
    warmup_start_lr: float
    end_lr: float
    poly_power: float
    milestones: tuple[float, ...]
    decay_factor: float
    train_epochs: float
    decay_start_epochs: float = 0.0  # polynomial (chainerkfac): the constant phase before the decay


class DiscardSpec(Frozen):
    """Drop the smallest-loss samples from the backward pass early in training (docs/methods.md section 6)."""

    fraction: float  # p, share of each micro-batch dropped (0.3 in the seed)
    epochs: float  # active while epoch <= epochs (0.3 x max_epochs by default)
    # rank: the quantile per virtual worker - a rank of the K-device run lbbench's virtual
    # workers are (docs/methods.md section 0), the seed's default; global: over the global batch
    scope: Literal["rank", "global"]


class BatchScheduleSpec(Frozen):
    """Batch-size schedules realised by changing accum at epoch boundaries (docs/methods.md section 6)."""

    kind: Literal["small_first", "increase"]
    first_batch: int = 0  # small_first: epoch 1's global batch ...
    first_lr: float = 0.0  # ... and its constant LR
    factor: float = 0.0  # increase: B *= factor = 1 / decay_factor where the step schedule would drop the LR
    max_batch: int = 0  # increase: cap (default: the training-set size)


class PerfSpec(Frozen):
    """Speed options. All off by default, and on a CPU-only worker the GPU-only ones are
    refused at start-up, with the option named (lbbench/backends/<fw>/perf.py)."""

    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast; fp16 with dynamic loss scaling
    channels_last: bool = False  # NHWC memory format for convolutions
    dali_device: Literal["cpu", "gpu"] = "cpu"  # gpu: DALI "mixed" decode + GPU augmentation
    compile: bool = False  # torch.compile the model
    compression: Literal["none", "fp16"] = "none"  # Horovod allreduce compression
    fusion_threshold_mb: int | None = None  # HOROVOD_FUSION_THRESHOLD (None: Horovod's 128 MB)
    # start each gradient bucket's allreduce during the last backward pass (standard step kind,
    # PyTorch, np > 1, no compression); buckets of fusion_threshold_mb, else 25 MB (torch DDP's
    # default: Horovod's 128 MB would make ResNet-50's whole gradient one bucket, no overlap)
    overlap_allreduce: bool = True
    peak_tflops: float | None = None  # for model FLOP utilisation (None: known GPUs only)
    # float64 model, data and optimizer state: the equivalence tests use it so that a real
    # difference (>= 1e-6) stands out from rounding (~1e-13) on any CPU; refused with amp.
    precision: Literal["float32", "float64"] = "float32"
    # deterministic GPU kernels (TensorFlow's op determinism; CPUs always are): opt-in, since
    # several ops have no deterministic GPU kernel
    deterministic: bool = False

    def gpu_only(self) -> list[str]:
        """The options set here that only a CUDA worker can honour."""
        out = [f"amp: {self.amp}"] if self.amp != "none" else []
        out += ["channels_last: true"] if self.channels_last else []
        return out + (["dali_device: gpu"] if self.dali_device == "gpu" else [])


class RunSpec(Frozen):
    suite: str
    run_id: str = ""
    method: str
    label: str  # the method's row name in reports (a method may appear twice)
    hparams: dict[str, Any]
    division: Literal["closed", "open"]
    division_reason: str
    framework: Literal["torch", "tf"]
    model: str
    data: DataSpec
    global_batch: int
    np: int
    local_batch: int
    accum: int
    bn_span: int
    seed: int
    lr: LrSpec
    label_smoothing: float
    target_top1: float
    eval_every: int
    eval_offset: int = 0  # evaluate after epochs e with (e + eval_offset) % eval_every == 0 (MLPerf's offset)
    max_epochs: int
    stop_at_target: bool
    diag_every: int
    eval_batch: int
    discard: DiscardSpec | None = None
    batch_schedule: BatchScheduleSpec | None = None
    recipe: str = ""  # where per-batch hyperparameters came from, if a recipe
    recipe_not_reproduced: tuple[str, ...] = ()  # what of the recipe's source lbbench does not do
    checkpoint_every: int = 1  # epochs between checkpoints (0: none); not part of the identity
    keep_checkpoints: int = 2  # the newest verified checkpoints kept; not part of the identity
    perf: PerfSpec = PerfSpec()
    # a tuning study's trial (lbbench/suite/tuning.py): its study, index and sampled values
    study: int | None = None
    trial: int | None = None
    tuned: dict[str, Any] | None = None
    final_of: str | None = None  # a re-run of this cell's winning trial "study.trial" with a new seed

    @property
    def virtual_workers(self) -> int:
        return self.np * self.accum

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.data.train_samples, self.global_batch)

    def identity(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        d.pop("run_id")
        d.pop("checkpoint_every")
        d.pop("keep_checkpoints")
        for key in ("study", "trial", "tuned", "final_of"):  # untuned runs keep the ids they had
            if d[key] is None:
                d.pop(key)
        d["data"].pop("path")
        if d["data"].pop("canonical"):
            d["data"].pop("fingerprint")
        # Default speed options leave the id as it was before they existed (existing results
        # stay found); peak_tflops only changes a reported ratio.
        # overlap_allreduce changes when the sums start, not what they are (bit-identical at
        # np <= 2; lbbench/backends/torch/loop.py: OverlappedAllreduce)
        d["perf"].pop("peak_tflops")
        d["perf"].pop("overlap_allreduce")
        if d["perf"] == PerfSpec().model_dump(mode="json", exclude={"peak_tflops", "overlap_allreduce"}):
            d.pop("perf")
        return d

    def with_id(self) -> RunSpec:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        split = f"np{self.np}x{self.local_batch}x{self.accum}"
        rid = f"{self.label}-b{self.global_batch}-{self.framework}-{split}-s{self.seed}-{digest}"
        return self.model_copy(update={"run_id": rid})

    def save(self, path: Path) -> None:
        from lbbench.store.files import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> RunSpec:
        return cls.model_validate(yaml.safe_load(Path(path).read_text()))

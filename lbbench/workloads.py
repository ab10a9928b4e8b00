"""Benchmark constants, defined once (AlgoPerf's workload base class idea).

A suite names a workload; its dataset size, target, evaluation cadence and image geometry
come from here unless the suite overrides them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    image_size: int
    classes: int
    target_top1: float
    eval_every: int  # epochs between evaluations
    max_epochs: int
    train_samples: int  # the canonical data set's images; a suite may name another set's counts
    eval_samples: int
    augment: str  # "imagenet" (random-resized crop + flip) or "none"
    label_smoothing: float
    # Digest of the canonical set's class names and images per class (lbbench/data/layout.py);
    # None where only the counts are pinned (ImageNet: its 1,000 WordNet folders are not listed).
    data_structure: str | None = None


WORKLOADS: dict[str, Workload] = {
    # MLPerf Training ResNet-50 v1.5 (docs/mlperf.md): 75.9% top-1, eval every 4 epochs.
    "imagenet": Workload(
        name="imagenet",
        model="resnet50",
        image_size=224,
        classes=1000,
        target_top1=0.759,
        eval_every=4,
        max_epochs=90,
        train_samples=1_281_167,
        eval_samples=50_000,
        augment="imagenet",
        label_smoothing=0.1,
    ),
    # scikit-learn's bundled UCI digits, written in the ImageNet folder layout by
    # `lbbench data digits`; small enough for a 2-core machine.
    "digits": Workload(
        name="digits",
        model="resnet_tiny",
        image_size=8,
        classes=10,
        target_top1=0.95,
        eval_every=1,
        max_epochs=12,
        train_samples=1536,
        eval_samples=261,
        augment="none",
        label_smoothing=0.0,
        data_structure="2dbb6b6f92c56d7d",
    ),
}

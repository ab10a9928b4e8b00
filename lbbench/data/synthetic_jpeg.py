"""`lbbench data synthetic-jpeg`: an ImageNet-shaped folder of generated JPEGs, to measure the
input pipeline (`lbbench bench input`) and the decode path without ImageNet. The images are
smooth colour gradients with mild noise, sized like ImageNet's (about 500 x 375 by default), so
that they compress to photo-like sizes (tens of kB) rather than noise's hundreds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_synthetic_jpegs(
    root: Path, classes: int, per_class: int, width: int, height: int, seed: int = 0, val_per_class: int = 0
) -> int:
    """train/ with ``per_class`` images per class and, when asked, val/ with ``val_per_class``:
    the layout a suite's ImageNet workload reads. Returns the number of files written."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    n = 0
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes if count else 0):
            d = Path(root) / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            n += _write_class(d, count, rng, xx, yy, Image)
    return n


def _write_class(d: Path, count: int, rng: np.random.Generator, xx: Any, yy: Any, Image: Any) -> int:
    for i in range(count):
        a, b, ph = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(a * xx + ph), np.cos(b * yy + 2 * ph), np.sin(a * xx + b * yy)], axis=-1)
        img = (127.5 * (base + 1) + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"img_{i:05d}.JPEG", quality=90)
    return count

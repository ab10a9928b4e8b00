"""`lbbench data synthetic-jpeg`: an ImageNet-shaped folder of generated JPEGs, to measure the
input pipeline (`lbbench bench input`) and the decode path without ImageNet. The images are
smooth colour gradients with mild noise, sized like ImageNet's (about 500 x 375 by default), so
that they compress to photo-like sizes (tens of kB) rather than noise's hundreds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_synthetic_jpegs(root: Path, classes: int, per_class: int, width: int, height: int, seed: int = 0) -> int:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    n = 0
    for c in range(classes):
        d = Path(root) / "train" / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a, b, ph = rng.uniform(0.005, 0.05, 3)
            base = np.stack([np.sin(a * xx + ph), np.cos(b * yy + 2 * ph), np.sin(a * xx + b * yy)], axis=-1)
            img = (127.5 * (base + 1) + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{i:05d}.JPEG", quality=90)
            n += 1
    return n

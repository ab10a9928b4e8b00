"""Write scikit-learn's bundled UCI digits (1,797 real 8x8 images) in the ImageNet layout.

The embedded default data: the same DALI reader that serves ImageNet serves these. The split
is fixed (seeded, stratified by class) so results are comparable across machines:
1,536 training images (= 2^9 x 3, so many global batches divide it) and 261 validation.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

TRAIN = 1536


def write_digits(root: Path) -> tuple[int, int]:
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return _count(root / "train"), _count(root / "val")
    d = load_digits()
    images = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    # Stratify: every class gives its share (rounded down) to validation; the few slots left
    # are filled in permutation order.
    n_val = len(images) - TRAIN
    val: list[int] = []
    for c in range(10):
        members = [int(i) for i in order if d.target[i] == c]
        val += members[: n_val * len(members) // len(images)]
    taken = set(val)
    val += [int(i) for i in order if i not in taken][: n_val - len(val)]
    val_set = set(val)
    assert len(val_set) == n_val
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        for i, (img, label) in enumerate(zip(images, d.target)):
            split = "val" if i in val_set else "train"
            out = tmp / split / f"{label:02d}"
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([img] * 3, axis=-1)).save(out / f"digit_{i:04d}.png")
        tmp.rename(root)  # atomic: a half-written data set is never mistaken for the real one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _count(root / "train"), _count(root / "val")


def _count(split: Path) -> int:
    return sum(1 for _ in split.rglob("*.png"))

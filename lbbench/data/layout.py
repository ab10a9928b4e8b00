"""The ImageNet folder layout (<root>/{train,val}/<class>/<image>) without any framework.

Both the DALI readers and the digits writer use this, so the class order (sorted folder
names -> label 0..C-1) is defined once.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".JPEG", ".JPG", ".PNG"}


def list_split(split_dir: Path) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, class names), files sorted within sorted classes."""
    split_dir = Path(split_dir)
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((split_dir / name).iterdir()):
            if f.suffix in IMAGE_SUFFIXES:
                files.append(str(f))
                labels.append(label)
    return files, labels, classes


def count_images(split_dir: Path) -> int:
    return len(list_split(split_dir)[0])


def check_count(path: str, split: str, found: int, expected: int) -> None:
    """A data directory must hold the images a run was planned against (its run id counts them)."""
    if found != expected:
        raise RuntimeError(
            f"{path}/{split} holds {found} images but the run expects {expected}; "
            "re-plan the suite against this data directory"
        )

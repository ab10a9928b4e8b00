"""The ImageNet folder layout (<root>/{train,val}/<class>/<image>) without any framework.

Both the DALI readers and the digits writer use this, so the class order (sorted folder
names -> label 0..C-1) is defined once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".JPEG", ".JPG", ".PNG"}


def list_split(split_dir: str | Path) -> tuple[list[str], list[int], list[str]]:
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


def check_count(path: str | None, split: str, found: int, expected: int) -> None:
    """A data directory must hold the images a run was planned against (its run id counts them)."""
    if found != expected:
        raise RuntimeError(
            f"{path}/{split} holds {found} images but the run expects {expected}; "
            "re-plan the suite against this data directory"
        )


# --- The data's identity --------------------------------------------------------------------
# A run id must never match a run on different data (a 9-class copy of digits with the same
# image counts trained a 10-way model and was then taken as the real run). Reading every byte
# of ImageNet is too slow to do at plan time, so the identity is what a directory listing and
# one stat per file give: class names, images per class and bytes per class. The result is
# cached in the data directory, keyed by the directories' modification times (a file added,
# removed or renamed changes them).

FINGERPRINT_CACHE = ".lbbench-fingerprint.json"


@dataclass(frozen=True)
class SplitStats:
    classes: tuple[str, ...]
    images: tuple[int, ...]  # per class
    nbytes: tuple[int, ...]  # per class

    @property
    def total(self) -> int:
        return sum(self.images)


@dataclass(frozen=True)
class DataStats:
    train: SplitStats
    val: SplitStats

    def structure(self) -> str:
        """Class names and images per class of both splits (what a canonical set pins)."""
        doc = {s: [list(x.classes), list(x.images)] for s, x in (("train", self.train), ("val", self.val))}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """The structure plus bytes per class: cheap, and different for any other data set."""
        doc = {
            s: [list(x.classes), list(x.images), list(x.nbytes)] for s, x in (("train", self.train), ("val", self.val))
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _split_stats(split_dir: Path) -> SplitStats:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    images, nbytes = [], []
    for name in classes:
        n = b = 0
        with os.scandir(split_dir / name) as it:
            for entry in it:
                if Path(entry.name).suffix in IMAGE_SUFFIXES:
                    n += 1
                    b += entry.stat().st_size
        images.append(n)
        nbytes.append(b)
    return SplitStats(tuple(classes), tuple(images), tuple(nbytes))


def _mtimes(root: Path) -> dict[str, int]:
    out = {}
    for split in ("train", "val"):
        d = root / split
        out[split] = d.stat().st_mtime_ns
        for p in d.iterdir():
            if p.is_dir():
                out[f"{split}/{p.name}"] = p.stat().st_mtime_ns
    return out


def data_stats(root: Path) -> DataStats:
    """The stats of ``root/{train,val}``, from the cache when no directory changed since."""
    root = Path(root)
    key = _mtimes(root)
    cache = root / FINGERPRINT_CACHE
    try:
        doc = json.loads(cache.read_text())
        if doc["key"] == key:
            return DataStats(*(SplitStats(*(tuple(v) for v in doc[s])) for s in ("train", "val")))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    stats = DataStats(_split_stats(root / "train"), _split_stats(root / "val"))
    doc = {"key": key} | {
        s: [list(x.classes), list(x.images), list(x.nbytes)] for s, x in (("train", stats.train), ("val", stats.val))
    }
    try:  # read-only data (a shared cluster copy) simply goes uncached
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, cache)
    except OSError:
        pass
    return stats

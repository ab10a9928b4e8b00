"""Damaged images: named, never a bare decoder crash.

DALI's decoders report a damaged file as ``nvImageCodec failure: '#4'`` or crash the process
(a truncated PNG made rank 0 die by SIGSEGV during evaluation), and neither names the file.
So the worker looks at every file's bytes before DALI sees them (``structural_problem``:
free, the bytes are in memory anyway, and it catches truncation, the common damage), and
when DALI still fails it decodes the recent batches' files with Pillow to find the culprit
(``culprit``). ``lbbench data check DIR`` decodes a whole tree up front, in parallel.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lbbench.data.layout import IMAGE_SUFFIXES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TAIL = 4096  # trailing bytes searched for the end marker (some writers append padding)


class UndecodableImage(RuntimeError):
    """An image file the decoder cannot read; the message names it."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"cannot decode {path}: {why}")


def structural_problem(data: bytes | npt.NDArray[np.uint8]) -> str | None:
    """What is visibly wrong with an encoded image (empty, truncated), from its first and last
    bytes; None when nothing is. Formats are told by content, not suffix (ImageNet has PNGs
    named .JPEG); formats other than PNG and JPEG pass."""
    b = data.tobytes() if isinstance(data, np.ndarray) else data
    if not b:
        return "empty file"
    if b.startswith(PNG_MAGIC):
        return None if b"IEND" in b[-TAIL:] else "truncated PNG (no IEND chunk)"
    if b.startswith(JPEG_MAGIC):
        return None if b"\xff\xd9" in b[-TAIL:] else "truncated JPEG (no end-of-image marker)"
    if b[:2] == b"\xff\xd8":
        return "damaged JPEG header"
    return None


def header_problem(data: bytes | npt.NDArray[np.uint8]) -> str | None:
    """Pillow reads the image's header (not its pixels: ~15 us for a JPEG against ~1.2 ms to
    decode it on a CPU): what DALI's PNG decoder crashed on (SIGSEGV under TensorFlow's
    plugin) fails here with a name. None when the header reads."""
    from PIL import Image

    b = data.tobytes() if isinstance(data, np.ndarray) else data
    why = structural_problem(b)
    if why:
        return why
    try:
        with Image.open(io.BytesIO(b)) as im:
            im.size  # noqa: B018 - the header is parsed by now
    except Exception as e:  # Pillow raises many types for damaged data; all mean the same here
        return _pillow_reason(e)
    return None


def _pillow_reason(e: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can identify (damaged header?)"
    return f"{type(e).__name__}: {e}"


def decode_problem(path: str | Path) -> str | None:
    """A full decode with Pillow; the reason it fails, or None."""
    from PIL import Image

    try:
        problem = header_problem(Path(path).read_bytes())
        if problem:
            return problem
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # Pillow raises many types for damaged data; all mean the same here
        return _pillow_reason(e)
    return None


def culprit(files: Iterable[str]) -> UndecodableImage | None:
    """The first of ``files`` that does not decode (after the decoder failed on one of them)."""
    for f in files:
        why = decode_problem(f)
        if why:
            return UndecodableImage(f, why)
    return None


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix in IMAGE_SUFFIXES and p.is_file())


def _check_many(paths: Sequence[str]) -> list[tuple[str, str]]:
    return [(p, why) for p in paths if (why := decode_problem(p))]


def check_tree(
    root: Path, workers: int | None = None, progress: Callable[[int], None] | None = None, chunk: int = 256
) -> tuple[int, list[tuple[str, str]]]:
    """Decode every image under ``root`` in ``workers`` processes; (files checked, bad files
    with the reason), bad files in path order. ``progress(n)`` is called as chunks finish."""
    files = [str(p) for p in image_files(root)]
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    bad: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for part, found in zip(chunks, pool.map(_check_many, chunks)):
            bad += found
            if progress:
                progress(len(part))
    return len(files), sorted(bad)

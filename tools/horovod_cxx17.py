"""Apply lbbench's C++17 edit to an unpacked Horovod 0.28.1 sdist.

Why: torch >= 2.1 headers need C++17, but Horovod 0.28.1 (its last release) forces C++14 in
two CMake files and compiles its bundled gloo with -std=c++11; mixing gloo's C++11 objects
with the C++17 torch ops then fails to link ("multiple definition of
gloo::rendezvous::Store::kDefaultTimeout"). Upstream fixed this after the release (horovod
PR #3998), never released. We carry exactly three one-line edits and refuse to build if the
sdist does not look the way we expect, so a silent partial patch cannot happen.

Usage: python tools/horovod_cxx17.py SRC_DIR      (prints the edit's fingerprint)
       python tools/horovod_cxx17.py --fingerprint (fingerprint only, for cache keys)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

# (file relative to the sdist root, exact old line, new line)
EDITS: tuple[tuple[str, str, str], ...] = (
    ("CMakeLists.txt", "set(CMAKE_CXX_STANDARD 14)", "set(CMAKE_CXX_STANDARD 17)"),
    ("horovod/torch/CMakeLists.txt", "    set(CMAKE_CXX_STANDARD 14)", "    set(CMAKE_CXX_STANDARD 17)"),
    (
        "third_party/gloo/CMakeLists.txt",
        '  set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} -std=c++11 -fPIC")',
        '  set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} -std=c++17 -fPIC")',
    ),
)


def fingerprint() -> str:
    return hashlib.sha256(repr(EDITS).encode()).hexdigest()[:16]


def apply(src: Path) -> None:
    for rel, old, new in EDITS:
        path = src / rel
        lines = path.read_text().split("\n")
        hits = [i for i, line in enumerate(lines) if line == old]
        if len(hits) != 1:
            raise SystemExit(f"horovod_cxx17: expected exactly one line {old!r} in {path}, found {len(hits)}")
        lines[hits[0]] = new
        path.write_text("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:] == ["--fingerprint"]:
        print(fingerprint())
    elif len(sys.argv) == 2:
        apply(Path(sys.argv[1]))
        print(fingerprint())
    else:
        raise SystemExit(__doc__)

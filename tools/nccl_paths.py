"""Print "INCLUDE_DIR LIB_DIR" of the NCCL that Horovod must build against: the nvidia-nccl
wheel's (the one CUDA PyTorch loads at run time). The wheel ships lib/libnccl.so.2 only, and
Horovod's FindNCCL looks for libnccl.so, so LIB_DIR is a directory of our own (the argument)
holding the unversioned link. Exit 1, saying why, when the wheel is missing or incomplete.

    python tools/nccl_paths.py LINK_DIR [--root NVIDIA_NCCL_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def nccl_paths(link_dir: Path, root: Path | None = None) -> tuple[Path, Path]:
    if root is None:
        import nvidia.nccl  # the wheel: nvidia-nccl-cu12 / -cu13

        root = Path(next(iter(nvidia.nccl.__path__)))
    include, lib = root / "include", root / "lib"
    if not (include / "nccl.h").is_file():
        raise SystemExit(f"nccl_paths: {include}/nccl.h missing: the NCCL wheel is incomplete")
    libs = sorted(lib.glob("libnccl.so.*"))
    if not libs:
        raise SystemExit(f"nccl_paths: no libnccl.so.* in {lib}")
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libnccl.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(libs[0].resolve())
    for versioned in libs:  # the loader resolves the soname next to the link too
        target = link_dir / versioned.name
        if not target.exists():
            target.symlink_to(versioned.resolve())
    return include, link_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("link_dir", type=Path)
    ap.add_argument("--root", type=Path, default=None, help="the wheel's nvidia/nccl directory (default: import it)")
    args = ap.parse_args()
    try:
        include, lib = nccl_paths(args.link_dir, args.root)
    except ImportError:
        sys.exit("nccl_paths: the nvidia-nccl wheel is not installed (CUDA PyTorch brings it)")
    print(include, lib)


if __name__ == "__main__":
    main()

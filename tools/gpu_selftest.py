"""The GPU image's self-test: fails (exit 1, naming each gap) unless the image holds the GPU
stack - a CUDA build of PyTorch, Horovod built with NCCL and with its TensorFlow extension,
TensorFlow built with CUDA, and DALI's CUDA build with its TensorFlow plugin. These are build
properties, checked without a GPU (``apptainer test`` and ``docker build`` run without one);
``horovodrun --check-build`` is not enough: it exits 0 whatever it finds.

    python tools/gpu_selftest.py
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys


def gaps() -> list[str]:
    out = []
    import torch

    if not torch.version.cuda:
        out.append(f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)")
    import horovod.torch as hvd

    if not hvd.nccl_built():
        out.append("Horovod was built without NCCL (hvd.nccl_built() is false)")
    try:
        import horovod.tensorflow  # noqa: F401
    except ImportError as e:
        out.append(f"Horovod's TensorFlow extension does not load: {e}")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    if not tf.test.is_built_with_cuda():
        out.append(f"TensorFlow {tf.__version__} is built without CUDA")
    dali = [d for d in ("nvidia-dali-cuda120", "nvidia-dali-cuda110", "nvidia-dali-cuda130") if _installed(d)]
    if not dali:
        out.append("no CUDA build of NVIDIA DALI is installed")
    try:
        import nvidia.dali.plugin.tf  # noqa: F401
    except Exception as e:  # the plugin raises more than ImportError when built against another TF
        out.append(f"DALI's TensorFlow plugin does not load: {e}")
    return out


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def main() -> None:
    found = gaps()
    for g in found:
        print(f"gpu_selftest: {g}", file=sys.stderr)
    print("gpu_selftest: " + ("FAILED" if found else "the GPU stack is complete"))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()

"""A GPU image's self-test: fails (exit 1, naming each gap) unless the image holds the GPU
environment of its framework, with one CUDA:
- torch: a CUDA build of PyTorch, Horovod built with NCCL, DALI's build for PyTorch's CUDA major;
- tf: TensorFlow built with CUDA, Horovod built with NCCL and its TensorFlow extension loading,
  DALI's build for TensorFlow's CUDA major with its TF plugin loading;
- both: the other framework absent, every installed CUDA distribution of one CUDA major
  (tools/gpu_stack.py's check, on what is installed), and the toolkit that compiled Horovod's
  CUDA kernels (nvcc) of that major.
These are build properties, checked without a GPU (``apptainer test`` and ``docker build`` run
without one); ``horovodrun --check-build`` is not enough: it exits 0 whatever it finds.

    python tools/gpu_selftest.py torch|tf
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import sys
from pathlib import Path

from gpu_stack import cuda_major, problems, report

DALI = {12: "nvidia-dali-cuda120", 13: "nvidia-dali-cuda130"}


def torch_gaps() -> tuple[list[str], int | None]:
    import torch

    out = []
    major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
    if major is None:
        out.append(f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)")
    import horovod.torch as hvd

    if not hvd.nccl_built():
        out.append("Horovod was built without NCCL (hvd.nccl_built() is false)")
    if importlib.util.find_spec("tensorflow") is not None:
        out.append("TensorFlow is installed too: its CUDA libraries replace PyTorch's (one framework per image)")
    return out, major


def tf_gaps() -> tuple[list[str], int | None]:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    out = []
    major = None
    if tf.test.is_built_with_cuda():
        major = int(str(tf.sysconfig.get_build_info().get("cuda_version", "0")).split(".")[0]) or None
    else:
        out.append(f"TensorFlow {tf.__version__} is built without CUDA")
    try:
        import horovod.tensorflow as hvd

        if not hvd.nccl_built():
            out.append("Horovod was built without NCCL (hvd.nccl_built() is false)")
    except ImportError as e:
        out.append(f"Horovod's TensorFlow extension does not load: {e}")
    try:
        import nvidia.dali.plugin.tf  # noqa: F401
    except Exception as e:  # the plugin raises more than ImportError when built against another TF
        out.append(f"DALI's TensorFlow plugin does not load: {e}")
    if importlib.util.find_spec("torch") is not None:
        out.append("PyTorch is installed too: its CUDA libraries replace TensorFlow's (one framework per image)")
    return out, major


def nvcc_major() -> int | None:
    """The CUDA toolkit's major (the base image's, which compiled Horovod), or None without one."""
    version = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "version.json"
    if not version.is_file():
        return None
    return int(json.loads(version.read_text())["cuda"]["version"].split(".")[0])


def gaps(framework: str) -> list[str]:
    out, major = torch_gaps() if framework == "torch" else tf_gaps()
    if major is not None:
        dali = DALI.get(major)
        if dali is None or not _installed(dali):
            out.append(f"{dali or 'a DALI build'} for CUDA {major} (the framework's) is not installed")
        nvcc = nvcc_major()
        if nvcc is not None and nvcc != major:
            out.append(f"the CUDA toolkit that compiled Horovod is CUDA {nvcc}, the framework's is CUDA {major}")
    installed = [(d.metadata["Name"], d.version) for d in md.distributions()]
    out += problems(installed)
    majors = {m for n, v in installed if (m := cuda_major(n, v)) is not None}
    if major is not None and majors - {major}:
        out.append(f"CUDA {sorted(majors - {major})} distributions installed next to the framework's CUDA {major}")
    return out


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ("torch", "tf"):
        sys.exit("usage: python tools/gpu_selftest.py torch|tf   (the image's framework)")
    report("gpu_selftest", gaps(sys.argv[1]), f"({sys.argv[1]}) ", "the GPU environment is complete")


if __name__ == "__main__":
    main()

"""One CUDA per GPU environment. The check (tools/gpu_stack.py) on hand-made sets, then on what
pip resolves from PyPI for each environment tools/bootstrap.sh builds (a dry run reading wheel
metadata - nothing large is downloaded), and on the old single GPU environment, which it must
reject: PyPI's torch 2.13.0 depends on CUDA 13 libraries, tensorflow[and-cuda] 2.18.1 on CUDA 12
ones, and their cuDNN and NCCL wheels install files of the same names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from gpu_stack import cuda_major, environment_requirements, problems, resolve


def test_cuda_major_reads_suffixes_builds_and_cuda13_versions():
    assert cuda_major("nvidia-cudnn-cu12", "9.3.0.75") == 12
    assert cuda_major("nvidia_nccl_cu13", "2.29.7") == 13
    assert (
        cuda_major("nvidia-dali-cuda120", "2.4.0") == 12 and cuda_major("nvidia-dali-tf-plugin-cuda130", "2.4.0") == 13
    )
    assert cuda_major("nvidia-cublas", "13.1.1.3") == 13 and cuda_major("cuda-toolkit", "13.0.3.0") == 13
    assert cuda_major("nvidia-cufft", "12.0.0.61") is None  # its own version numbers: cuda-toolkit carries the major
    assert cuda_major("torch", "2.13.0") is None and cuda_major("numpy", "2.0.2") is None


def test_one_cuda_passes_and_two_are_named():
    one = [("torch", "2.13.0"), ("nvidia-cudnn-cu13", "9.20.0.48"), ("nvidia-dali-cuda130", "2.4.0")]
    assert problems(one) == []
    mixed = [*one, ("nvidia-dali-cuda120", "2.4.0"), ("nvidia-cudnn-cu12", "9.3.0.75")]
    found = problems(mixed)
    assert found[0].startswith("two CUDA majors") and "CUDA 12: nvidia-cudnn-cu12==9.3.0.75" in found[0]
    assert "two builds of nvidia-cudnn: nvidia-cudnn-cu12, nvidia-cudnn-cu13" in found
    assert "two builds of nvidia-dali: nvidia-dali-cuda120, nvidia-dali-cuda130" in found


@pytest.mark.slow
@pytest.mark.parametrize("env,major", [("torch", 13), ("tf", 12)])
def test_each_gpu_environment_resolves_to_one_cuda(env, major):
    requirements = environment_requirements(env)
    installs = resolve(requirements)
    names = {n.lower() for n, _ in installs}
    assert ("torch" in names) == (env == "torch") and ("tensorflow" in names) == (env == "tf")
    assert problems(installs) == []
    assert {m for n, v in installs if (m := cuda_major(n, v)) is not None} == {major}


@pytest.mark.slow
def test_the_check_rejects_both_frameworks_in_one_gpu_environment():
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_stack.py"), "--requirement", "torch==2.13.0",
         "--requirement", "tensorflow[and-cuda]==2.18.1", "--requirement", "nvidia-dali-cuda120==2.4.0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 1 and "FAILED" in p.stdout, p.stdout + p.stderr
    for lib in (
        "nvidia-cudnn: nvidia-cudnn-cu12, nvidia-cudnn-cu13",
        "nvidia-nccl: nvidia-nccl-cu12, nvidia-nccl-cu13",
    ):
        assert f"two builds of {lib}" in p.stderr
    assert "two CUDA majors" in p.stderr and "nvidia-dali-cuda120==2.4.0" in p.stderr

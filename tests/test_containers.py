"""Container recipes cannot be built here (no engine, no registry of images): check that they
are consistent with setup.cfg and the bootstrap, which is where versions and the Horovod edit
live."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

DEF = (ROOT / "containers" / "lbbench.def").read_text()
DOCKER = (ROOT / "containers" / "Dockerfile").read_text()
BOOT = (ROOT / "tools" / "bootstrap.sh").read_text()


def _extras():
    c = configparser.ConfigParser()
    c.read(ROOT / "setup.cfg")
    return c


def _args(framework: str) -> dict[str, str]:
    text = (ROOT / "containers" / f"{framework}.args").read_text()
    return dict(ln.split("=", 1) for ln in text.split())


def test_recipes_build_one_framework_per_image_through_the_bootstrap():
    """A GPU image holds one framework with one CUDA: the base image's CUDA major (its nvcc
    compiles Horovod's CUDA kernels) is the framework's - 13 for PyPI's torch 2.13.0, 12 for
    tensorflow[and-cuda] 2.18.1 - in both recipes, which pass the framework to the bootstrap."""
    bases = {fw: _args(fw)["BASE"] for fw in ("torch", "tf")}
    assert {fw: _args(fw)["FRAMEWORK"] for fw in bases} == {"torch": "torch", "tf": "tf"}
    assert bases["torch"].startswith("nvidia/cuda:13.") and bases["tf"].startswith("nvidia/cuda:12.")
    assert "cudnn" not in bases["torch"] + bases["tf"]  # cuDNN comes from the framework's wheel, once
    for fw, base in bases.items():
        assert f"FROM {base} AS base-{fw}" in DOCKER
    assert "FROM base-${FRAMEWORK}" in DOCKER and "LBBENCH_GPU=${FRAMEWORK} " in DOCKER
    assert "From: {{ BASE }}" in DEF and "LBBENCH_GPU={{ FRAMEWORK }} " in DEF
    assert f"BASE={bases['torch']}" in DEF  # the %arguments defaults are the torch image's
    for text in (DEF, DOCKER):
        assert re.search(r"LBBENCH_GPU=\S+ .*bash tools/bootstrap.sh", text, re.S)
        assert "python3.11" in text
        # the self-test checks the stack it built (horovodrun --check-build exits 0 whatever it finds)
        assert "tools/gpu_selftest.py" in text and "lbbench plan" in text
        assert "LBBENCH_VENV=/opt/venv" in text  # never the checkout's .venv
    assert "%test" in DEF and "rm -rf /opt/lbbench/.venv" in DEF


def test_images_carry_the_infiniband_user_space():
    """Without rdma-core and the verbs providers NCCL falls back to sockets across nodes."""
    for text in (DEF, DOCKER):
        for package in ("rdma-core", "ibverbs-providers", "libibverbs1", "librdmacm1"):
            assert re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*{package}", text), package


def test_the_build_context_leaves_out_the_checkouts_environment_and_data():
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if not ln.startswith("#")}
    assert {".venv", "data", "results/demo", ".git"} <= ignored


def test_the_bootstrap_stamp_includes_the_gpu_mode():
    """A CPU venv must never count as an up-to-date GPU one."""

    def stamp(gpu: str) -> str:
        env = {**os.environ, "LBBENCH_GPU": gpu}
        return subprocess.run(
            ["bash", str(ROOT / "tools" / "bootstrap.sh"), "--stamp"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert len({stamp("0"), stamp("torch"), stamp("tf")}) == 3 and len(stamp("tf")) == 16


def test_each_environment_installs_one_framework():
    def extras(gpu: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "LBBENCH_GPU": gpu}
        return subprocess.run(
            ["bash", str(ROOT / "tools" / "bootstrap.sh"), "--extras"], env=env, capture_output=True, text=True
        )

    assert set(extras("0").stdout.strip().split(",")) >= {"torch", "tf", "dali", "test"}
    assert extras("torch").stdout.strip().split(",") == ["torch", "dali-cuda130", "horovod", "mpi", "data", "test-gpu"]
    assert extras("tf").stdout.strip().split(",") == ["tf-gpu", "dali", "horovod", "mpi", "data", "test-gpu"]
    bad = extras("1")  # the old single GPU environment is refused, saying why
    assert bad.returncode == 2 and "torch or tf" in bad.stderr and "CUDA 13" in bad.stderr


def test_gpu_selftest_fails_on_a_cpu_stack_naming_each_gap():
    def selftest(framework: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "tools" / "gpu_selftest.py"), framework], capture_output=True, text=True
        )

    p = selftest("torch")
    assert p.returncode == 1 and "FAILED" in p.stdout
    assert "is a CPU build (torch.version.cuda is None)" in p.stderr and "Horovod was built without NCCL" in p.stderr
    assert "TensorFlow is installed too" in p.stderr  # the CPU environment holds both frameworks
    p = selftest("tf")
    assert p.returncode == 1 and "built without CUDA" in p.stderr and "PyTorch is installed too" in p.stderr


def test_nccl_paths_give_horovod_one_nccl_with_an_unversioned_link(tmp_path):
    root = tmp_path / "nvidia" / "nccl"
    (root / "include").mkdir(parents=True)
    (root / "include" / "nccl.h").write_text("/* */")
    (root / "lib").mkdir()
    (root / "lib" / "libnccl.so.2").write_bytes(b"ELF")
    p = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "nccl_paths.py"), str(tmp_path / "link"), "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    include, lib = p.stdout.split()
    assert include == str(root / "include")
    assert (Path(lib) / "libnccl.so").resolve() == (root / "lib" / "libnccl.so.2").resolve()
    assert "HOROVOD_NCCL_INCLUDE" in BOOT and "HOROVOD_NCCL_LIB" in BOOT and "HOROVOD_NCCL_HOME" not in BOOT


def test_bootstrap_gpu_mode_builds_horovod_with_nccl_and_the_same_edit():
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in BOOT and "HOROVOD_WITH_MPI=1" in BOOT and "HOROVOD_WITH_GLOO=1" in BOOT
    assert 'tools/horovod_cxx17.py" "$src/horovod-$HOROVOD_VERSION"' in BOOT  # the edit, in every mode
    assert 'build_cfg "env-$ENV_NAME"' in BOOT and "HOROVOD_WITHOUT_TENSORFLOW=1" in BOOT


def test_horovods_cuda_kernels_target_architectures_the_images_nvcc_knows():
    """Horovod's default list starts at sm_35: nvcc 12 stops at it, nvcc 13 at anything below sm_75."""
    build = _extras()["lbbench:build"]
    lowest = {"tf": 50, "torch": 75}  # the oldest architecture nvcc 12 / nvcc 13 compiles for
    for fw, oldest in lowest.items():
        ccs = [int(c) for c in build[f"cuda-cc-{fw}"].split(",")]
        assert ccs and min(ccs) >= oldest and 90 in ccs, (fw, ccs)  # ... and Hopper (H100/H200)
    assert max(int(c) for c in build["cuda-cc-tf"].split(",")) <= 90  # nvcc 12.4 knows nothing newer
    assert 'HOROVOD_BUILD_CUDA_CC_LIST="$(build_cfg "cuda-cc-$ENV_NAME")"' in BOOT


def test_gpu_extras_pin_the_same_versions_as_the_cpu_ones():
    c = _extras()
    extras = c["options.extras_require"]
    tf_cpu = re.search(r"tensorflow-cpu==([\d.]+)", extras["tf"]).group(1)
    tf_gpu = re.search(r"tensorflow\[and-cuda\]==([\d.]+)", extras["tf-gpu"]).group(1)
    assert tf_cpu == tf_gpu == "2.18.1"
    assert "nvidia-dali-cuda120==2.4.0" in extras["dali"] and "torch==2.13.0" in extras["torch"]
    assert "nvidia-dali-cuda130==2.4.0" in extras["dali-cuda130"]  # the same DALI for PyTorch's CUDA 13
    assert "cuda120" in c["lbbench:build"]["dali-tf-plugin"]  # the TF plugin matches TensorFlow's CUDA 12
    assert c["lbbench:build"]["horovod"] == "0.28.1" and c["lbbench:build"]["tf-keras"] == "2.18.0"

"""Container recipes cannot be built here (no engine, no registry of images): check that they
are consistent with setup.cfg and the bootstrap, which is where versions and the Horovod edit
live."""

from __future__ import annotations

import configparser
import re

from helpers import ROOT

DEF = (ROOT / "containers" / "lbbench.def").read_text()
DOCKER = (ROOT / "containers" / "Dockerfile").read_text()
BOOT = (ROOT / "tools" / "bootstrap.sh").read_text()


def _extras():
    c = configparser.ConfigParser()
    c.read(ROOT / "setup.cfg")
    return c


def test_recipes_build_through_the_bootstrap_in_gpu_mode():
    for text in (DEF, DOCKER):
        assert re.search(r"LBBENCH_GPU=1 .*bash tools/bootstrap.sh", text, re.S)
        assert "python3.11" in text and "cuda:12." in text  # DALI cuda120 needs CUDA 12
        assert "horovodrun --check-build" in text and "lbbench plan" in text
    assert "%test" in DEF and "apptainer exec --nv" in DEF


def test_bootstrap_gpu_mode_builds_horovod_with_nccl_and_the_same_edit():
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in BOOT and "HOROVOD_WITH_MPI=1" in BOOT and "HOROVOD_WITH_GLOO=1" in BOOT
    assert 'tools/horovod_cxx17.py" "$src/horovod-$HOROVOD_VERSION"' in BOOT  # the edit, in every mode
    assert "TF_EXTRA=tf-gpu" in BOOT


def test_gpu_extras_pin_the_same_versions_as_the_cpu_ones():
    c = _extras()
    extras = c["options.extras_require"]
    tf_cpu = re.search(r"tensorflow-cpu==([\d.]+)", extras["tf"]).group(1)
    tf_gpu = re.search(r"tensorflow\[and-cuda\]==([\d.]+)", extras["tf-gpu"]).group(1)
    assert tf_cpu == tf_gpu == "2.18.1"
    assert "nvidia-dali-cuda120==2.4.0" in extras["dali"] and "torch==2.13.0" in extras["torch"]
    assert c["lbbench:build"]["horovod"] == "0.28.1" and c["lbbench:build"]["tf-keras"] == "2.18.0"

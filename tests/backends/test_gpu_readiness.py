"""The GPU path's CPU-checkable parts: a job given GPUs it cannot use is refused (not trained on
the CPU), two ranks on one GPU are refused, fp16-compressed averages do not overflow, MFU is per
device, and the launch lines carry what a GPU node needs (srun CPUs per task, mpirun's
forwarded variables, PMIx settings inside containers)."""

from __future__ import annotations

import json

import pytest

from lbbench.launch.commands import LaunchOptions, command, worker_env
from lbbench.spec import PerfSpec
from lbbench.worker.devices import physical_gpu, sharing_problem, unseen_problem
from lbbench.worker.roofline import peak_note, peak_tflops, utilisation

from helpers import gloo_script, lbbench, spec_from, write_suite


def test_allocated_but_unseen_gpus_are_named():
    assert unseen_problem({"CUDA_VISIBLE_DEVICES": "0,1"}, 0, "PyTorch").startswith(
        "GPUs were allocated to this worker (CUDA_VISIBLE_DEVICES=0,1) but PyTorch sees none"
    )
    assert "SLURM_STEP_GPUS=3" in unseen_problem({"SLURM_STEP_GPUS": "3"}, 0, "TensorFlow")
    assert unseen_problem({"CUDA_VISIBLE_DEVICES": "0"}, 1, "PyTorch") is None
    for cpu_env in ({}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}, {"SLURM_GPUS_ON_NODE": "0"}):
        assert unseen_problem(cpu_env, 0, "PyTorch") is None, cpu_env
    assert unseen_problem({"NVIDIA_VISIBLE_DEVICES": "all"}, 0, "PyTorch") is None  # CUDA base images set it


def test_two_ranks_on_one_gpu_are_named():
    # 8 ranks on a node with 4 GPUs visible to each: ranks 0 and 4 share GPU 0
    placements = [("n1", physical_gpu({}, 4, r)) for r in range(8)]
    assert "2 ranks share GPU 0 on n1 (4 GPU(s) shared in all)" in sharing_problem(placements)
    # srun --gpus-per-task=1: every rank sees one GPU, a different one
    bound = [("n1", physical_gpu({"CUDA_VISIBLE_DEVICES": str(r)}, 1, r)) for r in range(8)]
    assert sharing_problem(bound) is None
    assert sharing_problem([("n1", "0"), ("n2", "0")]) is None  # two nodes
    assert sharing_problem([("n1", None), ("n1", None)]) is None  # CPU workers


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_a_worker_given_gpus_it_cannot_see_refuses_to_train(fw, tmp_path, digits_dir):
    """On this CPU machine CUDA_VISIBLE_DEVICES=0 plays the scheduler's allocation."""
    suite = write_suite(
        tmp_path / "s.yaml",
        f"""
name: gpus
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{digits_dir}"}}, max_epochs: 1}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 256}}
matrix: {{methods: [{{name: sgd}}], global_batch: [256], workers: [2], frameworks: [{fw}]}}
""",
    )
    p = lbbench("run", suite, "--results", tmp_path / "r", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert p.returncode == 1, p.stdout[-2000:]
    (summary,) = (tmp_path / "r").rglob("summary.json")
    reason = json.loads(summary.read_text())["reason"]
    assert reason.startswith("GPUs were allocated to this worker (CUDA_VISIBLE_DEVICES=0) but"), reason


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_fp16_compressed_average_does_not_overflow(fw):
    p = gloo_script(2, "backends/fp16_allreduce_worker.py", fw)
    line = next(ln for ln in p.stdout.splitlines() if "RESULT" in ln)
    ours, naive = line.split("RESULT", 1)[1].strip().split("] [")
    assert ours.strip("[]") == "40000.0, 40000.0, 40000.0, 40000.0", line
    assert "inf" in naive, line  # what Average over an fp16 sum gives: the defect this avoids


def test_mfu_is_per_device_and_peaks_tell_the_h100_parts_apart():
    one = utilisation(24.5, 3000.0, 989.4, devices=1)["mfu"]
    sixty_four = utilisation(24.5, 64 * 3000.0, 989.4, devices=64)["mfu"]
    assert sixty_four == pytest.approx(one) and one == pytest.approx(24.5 * 3000 / 1e3 / 989.4)
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA H100 NVL", "none") == 417.5
    assert "no dense peak known for 'NVIDIA L40S'" in peak_note("NVIDIA L40S", "bf16", None)
    assert peak_note("cpu (2 cores)", "none", None) is None and peak_note("NVIDIA L40S", "bf16", 362.0) is None


SYNTHETIC = """
name: launch
workload: {name: digits, model: resnet_tiny, data: {kind: synthetic, train_samples: 512, eval_samples: 64}}
lr: {rule: linear, base_lr: 0.1, base_batch: 256}
matrix: {methods: [{name: sgd}], global_batch: [256], workers: [2]}
"""


def _spec(tmp_path):
    return spec_from(SYNTHETIC, tmp_path)


def test_srun_gives_each_worker_its_cpus(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SRUN_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")
    assert "--cpus-per-task=12" in command("slurm", spec, tmp_path)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert not any(a.startswith("--cpus-per-task") for a in command("slurm", spec, tmp_path))


def test_mpirun_forwards_variables_by_prefix(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    for var in ("NCCL_IB_HCA", "HOROVOD_CYCLE_TIME", "CUDA_DEVICE_ORDER", "XLA_FLAGS", "PMIX_MCA_gds"):
        monkeypatch.setenv(var, "x")
    monkeypatch.setenv("UNRELATED_SECRET", "y")
    cmd = command("mpirun", spec, tmp_path)
    forwarded = {cmd[i + 1] for i, a in enumerate(cmd) if a == "-x"}
    assert {"NCCL_IB_HCA", "HOROVOD_CYCLE_TIME", "CUDA_DEVICE_ORDER", "XLA_FLAGS", "PMIX_MCA_gds", "PATH"} <= forwarded
    assert "UNRELATED_SECRET" not in forwarded


def test_containerised_workers_get_pmix_settings(tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    monkeypatch.delenv("PMIX_MCA_gds", raising=False)
    assert worker_env(spec, LaunchOptions(container="/i.sif")) | {} == {
        "PMIX_MCA_gds": "hash",
        "PMIX_MCA_psec": "native",
    }
    assert worker_env(spec) == {}
    monkeypatch.setenv("PMIX_MCA_gds", "shmem")  # a site's own choice stands
    assert worker_env(spec, LaunchOptions(container="/i.sif"))["PMIX_MCA_gds"] == "shmem"
    assert PerfSpec().deterministic is False  # TensorFlow's GPU op determinism is opt-in


def test_a_backend_whose_framework_is_missing_says_which_image_to_use():
    """A GPU image holds one framework: its workers fail on a cell of the other, saying why."""
    from lbbench.backends import require

    require("numpy", "NumPy")  # present: nothing happens
    with pytest.raises(ImportError, match=r"TensorFlow is not installed .*\(--container torch=IMAGE,tf=IMAGE"):
        require("lbbench_no_such_framework", "TensorFlow")

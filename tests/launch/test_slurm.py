"""The Slurm launcher against a real one-node Slurm cluster (tools/slurm_one_node.sh: Debian's
Slurm 22.05, munge, PMIx), plus the sbatch scripts of a 2-node x 8-GPU layout.

The real-cluster test installs the packages when they are missing (root and apt needed). It
is skipped, with the reason, only where that cannot be done; in CI it runs.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from lbbench.store.summary import read_summary

from helpers import ROOT, assert_mlperf_compliant, lbbench, spec_from, write_suite

SCRIPT = ROOT / "tools" / "slurm_one_node.sh"

TINY = """
name: slurmy
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 4, target_top1: 0.8}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix: {{methods: [{{name: sgd}}], global_batch: [64, 128], workers: [{np}]}}
slurm: {{time: "00:20:00", partition: debug}}
"""

BIG = """
name: big
workload: {name: imagenet, data: {kind: synthetic}}
lr: {rule: linear, base_lr: 0.1, base_batch: 256}
matrix: {methods: [{name: lars, recipe: mlperf_lars}], global_batch: [32768], workers: [16]}
slurm: {gpus_per_node: 8, time: "04:00:00", account: proj42, partition: gpu, cpus_per_task: 12,
        setup: ["module load cuda/12.4"], extra: ["--exclusive"]}
"""


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    inst = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    if inst.returncode == 3:
        pytest.skip(f"Slurm cannot be installed here: {inst.stderr.strip()}")
    assert inst.returncode == 0, inst.stderr
    d = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", str(SCRIPT), "start", str(d)], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    yield {"SLURM_CONF": str(d / "slurm.conf")}
    subprocess.run(["bash", str(SCRIPT), "stop", str(d)], timeout=60)


@pytest.mark.slow
def test_submit_runs_real_sbatch_jobs_with_srun_pmix(slurm_cluster, tmp_path, digits_dir):
    suite = write_suite(tmp_path / "slurmy.yaml", TINY.format(data=digits_dir, np=2))
    env = {**slurm_cluster, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    p = lbbench(
        "run", suite, "--launcher", "slurm", "--submit", "--wait", "--results", tmp_path / "res", env=env, timeout=900
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("submitted as job") == 2
    rdirs = sorted((tmp_path / "res" / "slurmy").glob("sgd-*"))
    assert len(rdirs) == 2
    for rdir in rdirs:
        s = read_summary(rdir)
        assert s.status in ("success", "not_reached") and s.np == 2 and s.ranks_agree
        log = (rdir / "worker.log").read_text()
        assert "srun --mpi=pmix --ntasks 2" in log  # the job's lbbench launched through srun
        assert list(rdir.glob("slurm-*.out")) and (rdir / "job.sbatch").exists()
        assert_mlperf_compliant(rdir / "mllog.txt")
    # Submitting again submits nothing: every run is done.
    again = lbbench("run", suite, "--launcher", "slurm", "--submit", "--results", tmp_path / "res", env=env)
    assert again.returncode == 0 and "submitted as job" not in again.stdout and again.stdout.count("done before") == 2


@pytest.mark.slow
def test_cells_per_job_packs_tuning_trials_into_one_job_and_one_warm_launch(slurm_cluster, tmp_path, digits_dir):
    # a tuning study: two Halton trials of one cell, packed into one job
    text = TINY.format(data=digits_dir, np=2).replace("global_batch: [64, 128]", "global_batch: [64]")
    text += "tuning: {trials: 2, space: {lr.base_lr: {log_uniform: [0.05, 0.5]}}}\n"
    suite = write_suite(tmp_path / "slurmy.yaml", text)
    env = {**slurm_cluster, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    res = tmp_path / "res"
    args = ("run", suite, "--launcher", "slurm", "--submit", "--results", res, "--cells-per-job", "2")
    p = lbbench(*args, "--wait", env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    jobs = {
        line.split("submitted as job")[1].split()[0] for line in p.stdout.splitlines() if "submitted as job" in line
    }
    assert len(jobs) == 1  # both runs, one job
    rdirs = sorted((res / "slurmy").glob("sgd-*"))
    summaries = [read_summary(d) for d in rdirs]
    assert sorted(s.trial for s in summaries) == [0, 1] and all(s.done for s in summaries)
    assert (res / "slurmy" / "warm-launches.log").read_text().count("srun --mpi=pmix") == 1  # one launch
    again = lbbench(*args, env=env)
    assert again.returncode == 0 and "submitted as job" not in again.stdout


def test_sbatch_scripts_for_two_nodes_of_eight_gpus(tmp_path):
    suite = write_suite(tmp_path / "big.yaml", BIG)
    p = lbbench(
        "run",
        suite,
        "--launcher",
        "slurm",
        "--dry-run",
        "--container",
        "/images/lbbench.sif",
        "--results",
        tmp_path / "res",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks=16",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --cpus-per-task=12",
        "#SBATCH --time=04:00:00",
        "#SBATCH --account=proj42",
        "#SBATCH --partition=gpu",
        "#SBATCH --exclusive",
        "module load cuda/12.4",
    ):
        assert line in out, line
    assert "--launcher slurm" in out and "--container /images/lbbench.sif" in out and "--only lars-b32768" in out
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    # CLI options override the suite's
    p = lbbench(
        "run",
        suite,
        "--launcher",
        "slurm",
        "--dry-run",
        "--gpus-per-node",
        "4",
        "--time",
        "1:00:00",
        "--results",
        tmp_path / "res",
    )
    assert (
        "#SBATCH --nodes=4" in p.stdout and "#SBATCH --ntasks-per-node=4" in p.stdout and "--time=1:00:00" in p.stdout
    )


def test_srun_command_inside_an_allocation(tmp_path, monkeypatch):
    from lbbench.launch.commands import LaunchOptions, command
    from lbbench.launch.slurm import SlurmError

    spec = spec_from(BIG, tmp_path)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(SlurmError, match="--submit"):
        command("slurm", spec, tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    cmd = command(
        "slurm", spec, tmp_path, LaunchOptions(container="/i.sif", container_runtime="apptainer", binds=("/data",))
    )
    assert cmd[1:4] == ["--mpi=pmix", "--ntasks", "16"]
    i = cmd.index("apptainer")
    assert cmd[i : i + 6] == ["apptainer", "exec", "--nv", "--bind", "/data", "/i.sif"]
    assert cmd[i + 6 : i + 9] == ["python", "-m", "lbbench.backends.torch.train"]
    # one GPU image per framework: the run's framework picks its image
    per_fw = LaunchOptions(container="tf=/tf.sif,torch=/torch.sif", container_runtime="apptainer")
    cmd = command("slurm", spec, tmp_path, per_fw)
    assert cmd[cmd.index("apptainer") + 3] == "/torch.sif"
    cmd = command("slurm", spec.model_copy(update=dict(framework="tf")), tmp_path, per_fw)
    assert cmd[cmd.index("apptainer") + 3 :][:4] == ["/tf.sif", "python", "-m", "lbbench.backends.tf.train"]


def test_container_images_per_framework_are_checked_before_anything_starts(tmp_path, digits_dir):
    from lbbench.launch.commands import container_images

    assert container_images("/a.sif") == {"torch": "/a.sif", "tf": "/a.sif"}
    assert container_images("torch=/t.sif,tf=/f.sif") == {"torch": "/t.sif", "tf": "/f.sif"}
    for bad in ("torch=/t.sif,mxnet=/m.sif", "torch=", "torch=/a,torch=/b", "torch=/t.sif,/f.sif"):
        with pytest.raises(ValueError, match="bad entry"):
            container_images(bad)
    suite = write_suite(tmp_path / "s.yaml", TINY.format(data=digits_dir, np=2))  # torch runs
    res = tmp_path / "res"
    for container, says in (("tf=/f.sif", "no image for torch"), ("torch=/t.sif,jax=/j.sif", "bad entry 'jax")):
        p = lbbench("run", suite, "--launcher", "slurm", "--dry-run", "--container", container, "--results", res)
        assert p.returncode == 2 and says in p.stderr, p.stderr
    assert not res.exists()
    p = lbbench("run", suite, "--launcher", "slurm", "--dry-run", "--container", "torch=/t.sif", "--results", res)
    assert p.returncode == 0 and "--container torch=/t.sif" in p.stdout, p.stderr


def test_slurm_launcher_outside_an_allocation_says_what_to_do(tmp_path, digits_dir):
    suite = write_suite(tmp_path / "slurmy.yaml", TINY.format(data=digits_dir, np=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    p = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "lbbench"), "run", str(suite), "--launcher", "slurm"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert p.returncode == 2 and "SLURM_JOB_ID" in p.stderr and "--submit" in p.stderr
    p = lbbench("run", suite, "--submit")
    assert p.returncode == 2 and "--launcher slurm" in p.stderr


LONG = """
name: cancelled
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}},
           max_epochs: 6, target_top1: 0.999}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix: {{methods: [{{name: sgd}}], global_batch: [64], workers: [2]}}
slurm: {{time: "00:20:00", partition: debug}}
"""


@pytest.mark.slow
def test_scancel_leaves_the_run_resumable_and_a_resubmission_never_doubles_it(
    slurm_cluster, tmp_path, digits_dir, monkeypatch
):
    import time

    from lbbench.launch.slurm import queued_job

    suite = write_suite(tmp_path / "cancelled.yaml", LONG.format(data=digits_dir))
    env = {**slurm_cluster, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])  # for queued_job / squeue below
    res = tmp_path / "res"
    # rank 0 holds still in epoch 3 (the fault hook's pause; the job inherits the submitting
    # environment): the job is certainly running, with epoch 2's checkpoint, when scancel comes -
    # on a fast machine the whole run otherwise finishes between two polls
    held = {**env, "LBBENCH_FAULT": "mid_epoch:0:3:pause=120"}
    first = lbbench("run", suite, "--launcher", "slurm", "--submit", "--results", res, env=held)
    assert first.returncode == 0 and first.stdout.count("submitted as job") == 1, first.stdout + first.stderr
    (rdir,) = (res / "cancelled").glob("sgd-*")
    job = first.stdout.split("submitted as job")[1].split()[0]
    deadline = time.time() + 300
    while not list((rdir / "ckpt").glob("epoch-0002.pt.meta.json")):
        assert time.time() < deadline, (
            (rdir / "worker.log").read_text()[-3000:] if (rdir / "worker.log").exists() else ""
        )
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=True, env={**os.environ, **slurm_cluster})
    while queued_job(rdir):
        assert time.time() < deadline
        time.sleep(0.5)
    # cancelled mid-run: no summary, the checkpoints kept, no worker left holding the cell
    assert read_summary(rdir) is None
    st = lbbench("status", suite, "--results", res, env=env)
    assert "resumable" in st.stdout and "running" not in st.stdout, st.stdout
    # resubmitted twice: one job; the second submission finds it queued
    again = lbbench("run", suite, "--launcher", "slurm", "--submit", "--results", res, env=env)
    assert again.stdout.count("submitted as job") == 1, again.stdout + again.stderr
    twice = lbbench("run", suite, "--launcher", "slurm", "--submit", "--wait", "--results", res, env=env, timeout=900)
    assert "already queued or running as job" in twice.stdout and "submitted as job" not in twice.stdout, twice.stdout
    assert twice.returncode == 0, twice.stdout[-3000:] + twice.stderr[-3000:]
    s = read_summary(rdir)
    assert s is not None and s.epochs_run == 6 and s.ranks_agree
    log = (rdir / "mllog.txt").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "run_stop"') == 1

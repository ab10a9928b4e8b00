"""Slurm: ``srun`` inside an allocation, and one ``sbatch`` script per run outside one.

Inside an allocation (SLURM_JOB_ID set) the workers start with ``srun --mpi=pmix -n NP``:
Slurm's PMIx server wires up Open MPI, so Horovod runs its MPI controller with no mpirun.
Outside one, ``lbbench run --launcher slurm --submit`` writes RUN_DIR/job.sbatch for every run
still to do and submits it; the job runs ``lbbench run SUITE --only RUN_ID --launcher slurm``,
so locking, resuming from checkpoints, failure handling and the summary are the same code as
everywhere else, and a job killed at its time limit is picked up by the next submission.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lbbench.launch.commands import LaunchOptions, worker_argv
from lbbench.spec import RunSpec


class SlurmError(Exception):
    pass


@dataclass(frozen=True)
class JobResources:
    """sbatch resources of a run; ``None`` fields are left to the site's defaults."""

    nodes: int | None = None
    ntasks_per_node: int | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    time: str | None = None  # Slurm's formats: "MM", "HH:MM:SS", "D-HH"
    account: str | None = None
    partition: str | None = None
    extra: tuple[str, ...] = ()  # further "#SBATCH ..." options, verbatim
    setup: tuple[str, ...] = ()  # shell lines before lbbench starts (module load ...)

    def layout(self, np_: int) -> tuple[int, int]:
        """(nodes, tasks per node) for np workers: one task per GPU when GPUs are given."""
        per_node = self.ntasks_per_node or self.gpus_per_node or (math.ceil(np_ / self.nodes) if self.nodes else np_)
        nodes = self.nodes or math.ceil(np_ / per_node)
        if nodes * per_node < np_:
            raise SlurmError(f"{np_} workers do not fit on {nodes} node(s) x {per_node} task(s)")
        return nodes, min(per_node, np_)


def srun_command(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    if not os.environ.get("SLURM_JOB_ID"):
        raise SlurmError(
            "--launcher slurm starts workers with srun inside a Slurm allocation, and SLURM_JOB_ID "
            "is not set: add --submit to write and submit sbatch jobs, or run inside salloc/sbatch"
        )
    mpi = opts.srun_mpi if opts else "pmix"
    # Since Slurm 22.05 a step does not inherit the job's --cpus-per-task: without it every
    # worker (and its DALI threads) gets one CPU.
    cpus = os.environ.get("SRUN_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_PER_TASK")
    return [
        _tool("srun"),
        f"--mpi={mpi}",
        "--ntasks",
        str(spec.np),
        *([f"--cpus-per-task={cpus}"] if cpus else []),
        "--kill-on-bad-exit=1",
        "--export=ALL",
        *worker_argv(spec, run_dir, opts, more),
    ]


def sbatch_script(
    spec: RunSpec,
    run_dir: Path,
    suite_file: Path,
    results: Path,
    res: JobResources,
    opts: LaunchOptions | None = None,
    pack: Sequence[RunSpec] = (),
) -> str:
    """The job of one run, or of ``spec`` and the runs in ``pack`` (same np and framework): the
    job's `lbbench run` trains them in one warm launch (lbbench/worker/pool.py)."""
    nodes, per_node = res.layout(spec.np)
    name = f"lbbench-{spec.run_id}" + (f"-and-{len(pack)}-more" if pack else "")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        f"#SBATCH --ntasks={spec.np}",
        f"#SBATCH --ntasks-per-node={per_node}",
    ]
    if res.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={res.gpus_per_node}")
    for opt, value in (
        ("cpus-per-task", res.cpus_per_task),
        ("time", res.time),
        ("account", res.account),
        ("partition", res.partition),
    ):
        if value:
            lines.append(f"#SBATCH --{opt}={value}")
    lines += [
        f"#SBATCH --output={run_dir.resolve()}/slurm-%j.out",
        *(f"#SBATCH {e}" for e in res.extra),
        "set -euo pipefail",
        *res.setup,
        f"cd {shlex.quote(str(Path.cwd()))}",
    ]
    cmd = [
        _lbbench(),
        "run",
        str(suite_file.resolve()),
        "--only",
        ",".join([spec.run_id, *(r.run_id for r in pack)]),
        "--launcher",
        "slurm",
        "--results",
        str(results.resolve()),
    ]
    if opts and opts.container:
        cmd += ["--container", opts.container] + (
            ["--container-runtime", opts.container_runtime] if opts.container_runtime else []
        )
    if opts and opts.srun_mpi != "pmix":
        cmd += ["--srun-mpi", opts.srun_mpi]
    lines.append("exec " + shlex.join(cmd))
    return "\n".join(lines) + "\n"


def submit(script: Path) -> str:
    p = subprocess.run([_tool("sbatch"), "--parsable", str(script)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {(p.stderr or p.stdout).strip()}")
    return p.stdout.strip().split(";")[0]


def wait(job_ids: list[str], poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Until none of the jobs is pending or running."""
    t0 = time.time()
    while job_ids:
        p = subprocess.run([_tool("squeue"), "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True, text=True)
        left = set(p.stdout.split()) if p.returncode == 0 else set()
        job_ids = [j for j in job_ids if j in left]
        if not job_ids:
            return
        if timeout_s is not None and time.time() - t0 > timeout_s:
            raise SlurmError(f"jobs {', '.join(job_ids)} still queued or running after {timeout_s:.0f} s")
        time.sleep(poll_s)


JOB_FILE = "slurm.job"  # in a run dir: the id of the job last submitted for it


def queued_job(run_dir: Path) -> str | None:
    """The id of the job submitted for the run if it is still pending or running (its id is kept
    in the run dir; a packed job trains several runs), so a resubmission never queues a second
    job for a run in flight."""
    job_file = run_dir / JOB_FILE
    if not job_file.exists():
        return None
    job = job_file.read_text().strip()
    p = subprocess.run([_tool("squeue"), "-h", "-o", "%i", "-j", job], capture_output=True, text=True)
    # squeue exits non-zero for a job id it no longer knows: finished
    return job if p.returncode == 0 and job in p.stdout.split() else None


def _tool(name: str) -> str:
    return shutil.which(name) or name


def _lbbench() -> str:
    here = Path(sys.executable).parent / "lbbench"
    return str(here) if here.exists() else "lbbench"


def _packs(todo: list[tuple[RunSpec, Path]], n: int) -> list[list[tuple[RunSpec, Path]]]:
    """Runs of the same np and framework, ``n`` to a job, in suite order."""
    groups: dict[tuple[int, str], list[tuple[RunSpec, Path]]] = {}
    for r, d in todo:
        groups.setdefault((r.np, r.framework), []).append((r, d))
    return [g[i : i + n] for g in groups.values() for i in range(0, len(g), max(1, n))]


@dataclass
class Submission:
    """What ``submit_runs`` did: runs skipped as done, scripts written (or only shown, with
    --dry-run), jobs submitted, and - after --wait - the runs that did not finish."""

    skipped: list[str]
    scripts: list[tuple[str, Path, str]]  # (run id, script path, script text)
    jobs: list[tuple[str, str]]  # (run id, job id)
    unfinished: list[str]
    queued: list[tuple[str, str]] = field(default_factory=list)  # (run id, job id) already in the queue


def submit_runs(
    runs: list[RunSpec],
    suite_name: str,
    suite_file: Path,
    results: Path,
    res: JobResources,
    opts: LaunchOptions | None,
    dry_run: bool,
    wait_for_jobs: bool,
    cells_per_job: int = 1,
) -> Submission:
    """One sbatch script per run still to do: written to RUN_DIR/job.sbatch and submitted
    (or, with ``dry_run``, returned for printing)."""
    from lbbench.store.files import atomic_write_text, run_dir
    from lbbench.store.summary import is_done

    out = Submission([], [], [], [])
    todo: list[tuple[RunSpec, Path]] = []
    for r in runs:
        rdir = run_dir(results, suite_name, r.run_id)
        if is_done(rdir):
            out.skipped.append(r.run_id)
            continue
        if not dry_run and (job := queued_job(rdir)):
            out.queued.append((r.run_id, job))
            continue
        todo.append((r, rdir))
    for pack in _packs(todo, cells_per_job):
        (first, rdir), rest = pack[0], pack[1:]
        script = sbatch_script(first, rdir, suite_file, results, res, opts, [r for r, _ in rest])
        out.scripts.append((first.run_id, rdir / "job.sbatch", script))
        if dry_run:
            continue
        rdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(rdir / "job.sbatch", script)
        job = submit(rdir / "job.sbatch")
        for r, d in pack:
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_text(d / JOB_FILE, job + "\n")
            out.jobs.append((r.run_id, job))
    in_flight = out.jobs + out.queued
    if wait_for_jobs and in_flight:
        wait(list(dict.fromkeys(j for _, j in in_flight)))
        out.unfinished = [rid for rid, _ in in_flight if not is_done(run_dir(results, suite_name, rid))]
    return out

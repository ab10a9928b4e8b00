"""Launchers turn (RunSpec, run dir) into the command that starts the worker processes.

The worker never changes per launcher: every launcher ends in
``python -m lbbench.backends.<framework>.train RUN_DIR``. Adding a launcher = one function
that returns an argv list, and one entry in ``LAUNCHERS``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lbbench.spec import RunSpec

FRAMEWORKS = ("torch", "tf")


def container_images(value: str) -> dict[str, str]:
    """``--container IMAGE`` (every framework's workers in it) or ``torch=IMAGE,tf=IMAGE`` (one image
    per framework: a GPU image holds one framework, as PyTorch's and TensorFlow's CUDA libraries
    collide). Raises ValueError naming a bad entry."""
    if "=" not in value:
        return {fw: value for fw in FRAMEWORKS}
    images: dict[str, str] = {}
    for entry in value.split(","):
        fw, sep, image = entry.partition("=")
        if not sep or fw not in FRAMEWORKS or not image or fw in images:
            raise ValueError(f"--container {value!r}: bad entry {entry!r} (expected IMAGE or torch=IMAGE,tf=IMAGE)")
        images[fw] = image
    return images


@dataclass(frozen=True)
class LaunchOptions:
    """How workers are started beyond the launcher's name: a container image to run them in
    (``apptainer exec --nv IMAGE``, or singularity; one for all, or one per framework), and the
    srun MPI plugin."""

    container: str | None = None  # as given: IMAGE or torch=IMAGE,tf=IMAGE (container_images)
    container_runtime: str | None = None  # apptainer | singularity (None: whichever is installed)
    srun_mpi: str = "pmix"
    binds: tuple[str, ...] = ()  # host paths the container must see (results, data)

    def image(self, framework: str) -> str | None:
        return container_images(self.container).get(framework) if self.container else None


def container_prefix(opts: LaunchOptions | None, framework: str) -> list[str]:
    image = opts.image(framework) if opts else None
    if not opts or not image:
        return []
    runtime = opts.container_runtime or next((t for t in ("apptainer", "singularity") if shutil.which(t)), "apptainer")
    binds = [a for b in sorted(set(opts.binds)) for a in ("--bind", b)]
    return [runtime, "exec", "--nv", *binds, image]


def worker_argv(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    """The worker's command line: one run dir, or several - a warm launch that trains them in
    turn in the same processes (lbbench/worker/pool.py)."""
    # Inside a container the host's interpreter path means nothing: use the image's python.
    python = "python" if opts and opts.container else sys.executable
    dirs = [str(run_dir), *map(str, more)]
    return [*container_prefix(opts, spec.framework), python, "-m", f"lbbench.backends.{spec.framework}.train", *dirs]


def worker_env(spec: RunSpec, opts: LaunchOptions | None = None) -> dict[str, str]:
    """Environment a run's workers need beyond the caller's: Horovod reads its tensor-fusion
    buffer size from the environment only; PMIx inside an Apptainer/Singularity image cannot
    use the host's shared-memory datastore or its munge-based security plugin, so a containerised
    worker is told to use the hash datastore and native security (else PMIx_Init fails)."""
    env = {}
    if spec.perf.fusion_threshold_mb is not None:
        env["HOROVOD_FUSION_THRESHOLD"] = str(spec.perf.fusion_threshold_mb * 2**20)
    if opts and opts.container:
        env.setdefault("PMIX_MCA_gds", os.environ.get("PMIX_MCA_gds", "hash"))
        env.setdefault("PMIX_MCA_psec", os.environ.get("PMIX_MCA_psec", "native"))
    return env


# Forwarded to every rank by mpirun (-x): a fixed list, plus every variable with one of these
# prefixes (NCCL tuning, Horovod knobs, CUDA selection, XLA flags, PMIx settings).
FORWARD_VARS = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "LBBENCH_PLATFORM", "TF_USE_LEGACY_KERAS")
FORWARD_PREFIXES = ("NCCL_", "HOROVOD_", "CUDA_", "XLA_FLAGS", "PMIX_", "LBBENCH_", "OMP_", "TF_")


def _tool(name: str) -> str:
    """Prefer the tool next to this interpreter (the venv's horovodrun / Open MPI)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def local_command(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    """One node, Gloo controller, Horovod's rendezvous server started by lbbench itself
    (lbbench/launch/gloo_local.py says why not horovodrun)."""
    return [sys.executable, "-m", "lbbench.launch.gloo_local", str(spec.np), *worker_argv(spec, run_dir, opts, more)]


def horovodrun_command(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    return [
        _tool("horovodrun"),
        "-np",
        str(spec.np),
        "-H",
        f"localhost:{spec.np}",
        "--gloo",
        *worker_argv(spec, run_dir, opts, more),
    ]


def mpirun_command(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    """Open MPI, built by hand: ``horovodrun --mpi`` passes single-dash options that Open MPI 5
    misreads (docs/platform.md). Flags follow Horovod's docs: no binding, slot mapping, and the
    environment the workers need exported with -x."""
    cmd = [_tool("mpirun"), "-np", str(spec.np), "--bind-to", "none", "--map-by", "slot"]
    hostfile = os.environ.get("LBBENCH_HOSTFILE")
    if hostfile:
        cmd += ["--hostfile", hostfile]
    elif spec.np > (os.cpu_count() or 1):
        cmd += ["--oversubscribe"]
    if os.geteuid() == 0:
        cmd += ["--allow-run-as-root"]
    names = {*os.environ, *worker_env(spec, opts)}
    for var in sorted(names):
        if var in FORWARD_VARS or var.startswith(FORWARD_PREFIXES):
            cmd += ["-x", var]
    return cmd + worker_argv(spec, run_dir, opts, more)


def slurm_command(
    spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    from lbbench.launch.slurm import srun_command

    return srun_command(spec, run_dir, opts, more)


Launcher = Callable[[RunSpec, Path, "LaunchOptions | None", Sequence[Path]], list[str]]
LAUNCHERS: dict[str, Launcher] = {
    "local": local_command,
    "horovodrun": horovodrun_command,
    "mpirun": mpirun_command,
    "slurm": slurm_command,
}


def command(
    launcher: str, spec: RunSpec, run_dir: Path, opts: LaunchOptions | None = None, more: Sequence[Path] = ()
) -> list[str]:
    """The command that starts ``spec.np`` workers on ``run_dir`` (and then on ``more``: the
    other cells of a warm launch, which share np and framework)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; known: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[launcher](spec, run_dir, opts, more)


def local_gpu_present() -> bool:
    """A framework-free look for an NVIDIA GPU on this node (the local launcher's workers run here)."""
    import subprocess

    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0

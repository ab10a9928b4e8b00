"""Is this worker on the GPU it should be? (framework-free: the backends pass what their
framework sees.)

Two ways a GPU run goes wrong without crashing: CUDA is unusable in the worker (an old driver,
a clobbered cuDNN, an image started without ``--nv``) and the framework silently trains on the
CPU although the scheduler gave the job GPUs; or more ranks run on a node than it has GPUs, so
two ranks share one. Both are refused before any work, with the cause named.
"""

from __future__ import annotations

import os
import socket
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from lbbench.store.summary import ERROR_PREFIX

# What schedulers set when a job step was given GPUs. (Not NVIDIA_VISIBLE_DEVICES: CUDA base
# images set it to "all" whether or not the machine has a GPU.)
ALLOCATION_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
    "SLURM_GPUS_ON_NODE",
)
NONE_VALUES = {"", "-1", "none", "void", "NoDevFiles"}


def allocated_gpus(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, value) of the first variable saying this process was given GPUs."""
    for var in ALLOCATION_VARS:
        value = env.get(var)
        if value is None or value.strip() in NONE_VALUES or (var == "SLURM_GPUS_ON_NODE" and value.strip() == "0"):
            continue
        return var, value
    return None


def unseen_problem(env: Mapping[str, str], visible: int, framework: str) -> str | None:
    """GPUs allocated but none visible to the framework: the run would silently use the CPU."""
    alloc = allocated_gpus(env)
    if alloc is None or visible > 0:
        return None
    var, value = alloc
    return (
        f"GPUs were allocated to this worker ({var}={value}) but {framework} sees none: CUDA is unusable "
        "here (driver too old for the framework's CUDA, a clobbered CUDA library, or a container "
        "started without --nv); refusing to train on the CPU instead"
    )


def physical_gpu(env: Mapping[str, str], visible: int, local_rank: int) -> str | None:
    """The GPU this rank uses (local rank modulo the visible GPUs), named as the node knows it:
    through CUDA_VISIBLE_DEVICES when set, so that ranks bound to one GPU each are told apart."""
    if visible <= 0:
        return None
    index = local_rank % visible
    listed = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[index] if index < len(listed) else str(index)


def sharing_problem(placements: Sequence[tuple[str, str | None]]) -> str | None:
    """(host, GPU) of every rank (an allgather): two ranks on one GPU is a mis-sized job."""
    shared = sorted((h, g, n) for (h, g), n in Counter(placements).items() if g is not None and n > 1)
    if not shared:
        return None
    host, gpu, n = shared[0]
    return (
        f"{n} ranks share GPU {gpu} on {host} ({len(shared)} GPU(s) shared in all): more ranks per node than "
        "GPUs; start one worker per GPU (--ntasks-per-node = GPUs per node)"
    )


def placement_problem(hvd: Any, env: Mapping[str, str], visible: int, framework: str) -> str | None:
    """Both checks over every rank (one allgather, so that every rank refuses together)."""
    mine = (socket.gethostname(), physical_gpu(env, visible, hvd.local_rank()), unseen_problem(env, visible, framework))
    every = hvd.allgather_object(mine) if hvd.size() > 1 else [mine]
    first = next((p for _, _, p in every if p), None)
    return first or sharing_problem([(h, g) for h, g, _ in every])


def refused(hvd: Any, visible: int, framework: str) -> bool:
    """``placement_problem`` for this process's environment, printed as the run's failure
    reason (the runner records the line); True when the worker must stop (exit 2)."""
    problem = placement_problem(hvd, os.environ, visible, framework)
    if problem:
        print(f"{ERROR_PREFIX}{problem}", file=sys.stderr, flush=True)
    return problem is not None

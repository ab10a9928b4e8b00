"""The worker's device and the speed options of ``RunSpec.perf`` (TensorFlow), for the
training worker and the benchmark alike: one GPU per rank (by local rank), memory growth,
the bf16 mixed-precision policy, XLA through ``compile`` (lbbench/backends/tf/loop.py), and CPU
thread counts. Options this worker cannot honour are refused before any work, with the
option named (lbbench/backends/torch/perf.py does the same for PyTorch).
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from lbbench.methods import get_method
from lbbench.spec import PerfSpec, RunSpec


def synchronizer():
    """The step-time parts on a GPU: TensorFlow runs eager ops asynchronously there and offers
    no events, so a part's end waits for the devices (tf.test.experimental.sync_devices); on a
    CPU every op has finished when it returns."""
    sync = getattr(tf.test.experimental, "sync_devices", None)
    if sync is not None and tf.config.list_logical_devices("GPU"):
        return sync
    return lambda: None


def refusals(spec: RunSpec, gpus: list[Any]) -> list[str]:
    out = []
    if not gpus and spec.perf.gpu_only():
        out.append(f"{', '.join(spec.perf.gpu_only())} need a GPU and this TensorFlow worker sees none")
    if spec.perf.amp == "fp16":
        out.append("amp: fp16 needs loss scaling, which the TensorFlow backend does not implement; use amp: bf16")
    kind = get_method(spec.method).step_kind
    if spec.perf.compile and not kind.compiles:
        out.append(f"compile: {spec.method}'s {kind.name} step cannot run under XLA")
    if spec.perf.precision == "float64" and spec.perf.amp != "none":
        out.append(f"precision: float64 and amp: {spec.perf.amp} exclude each other")
    return out


def configure(spec: RunSpec, hvd: Any, deterministic: bool) -> list[Any]:
    """Sets this process's device up (once: TensorFlow fixes it when its runtime starts) and the
    first cell's precision; returns this rank's GPU as a one-element list (empty on CPU).
    Op determinism: always on a CPU (a resumed run redoes the same steps bit for bit); on a GPU
    only with ``run.perf.deterministic`` (several ops have no deterministic GPU kernel and then
    raise UnimplementedError)."""
    gpus = tf.config.list_physical_devices("GPU")
    if deterministic and (not gpus or spec.perf.deterministic):
        tf.config.experimental.enable_op_determinism()
    mine: list[Any] = []
    if gpus:
        gpu = gpus[gpu_index(hvd, gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
        mine = [gpu]
    else:
        cpu_threads(hvd.local_size())
    configure_cell(spec, mine)
    return mine


def cpu_threads(local_workers: int) -> None:
    """A CPU worker's thread pools (before TensorFlow's runtime starts): its share of the node's
    cores for each op, and one op at a time, so that the node's ranks do not oversubscribe the
    cores. `bench loop`'s bare loop takes the same, so that the two compare like for like."""
    tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // local_workers))
    tf.config.threading.set_inter_op_parallelism_threads(1)


def configure_cell(spec: RunSpec, gpus: list[Any]) -> None:
    """What a cell sets for itself (a warm launch trains several in one process): a fresh Keras
    session (layer names, uids), its float type and its mixed-precision policy."""
    tf.keras.backend.clear_session()
    # before any layer exists: Keras reads it at build time
    tf.keras.backend.set_floatx("float64" if spec.perf.precision == "float64" else "float32")
    policy = "mixed_bfloat16" if gpus and spec.perf.amp == "bf16" else tf.keras.backend.floatx()
    tf.keras.mixed_precision.set_global_policy(policy)


def average_args(hvd: Any, perf: PerfSpec) -> dict[str, Any]:
    """Keyword arguments of an averaging allreduce: with fp16 compression, each rank's part is
    scaled by 1/np before the fp16 sum (which np full-range values would overflow), as in the
    PyTorch backend's perf.average_args."""
    if perf.compression == "fp16":
        return dict(op=hvd.Sum, prescale_factor=1.0 / hvd.size(), compression=hvd.Compression.fp16)
    return dict(op=hvd.Average, compression=hvd.Compression.none)


def gpu_index(hvd: Any, gpus: list[Any]) -> int:
    """This rank's physical GPU (CUDA ordinal): DALI's device_id, which TensorFlow's visible-device
    renumbering (the chosen GPU is TensorFlow's /gpu:0) does not change."""
    return int(hvd.local_rank()) % len(gpus)


def dali_gpu(spec: RunSpec, hvd: Any, gpus: list[Any]) -> int | None:
    """The physical GPU DALI decodes on (``dali_device: gpu``), else None (CPU decoding)."""
    if not gpus or spec.perf.dali_device != "gpu":
        return None
    return gpu_index(hvd, tf.config.list_physical_devices("GPU"))


def device_name(gpus: list[Any]) -> str:
    """The GPU's model ("NVIDIA H100 80GB HBM3", what the peak table matches; a PhysicalDevice's
    name is only "/physical_device:GPU:0"), or the CPU."""
    if not gpus:
        return f"cpu ({os.cpu_count()} cores)"
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name") or gpus[0].name)

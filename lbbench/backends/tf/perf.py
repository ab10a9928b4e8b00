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
from lbbench.spec import RunSpec


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
    """Sets this rank's device up; returns the GPUs TensorFlow sees (empty on CPU)."""
    gpus = tf.config.list_physical_devices("GPU")
    if spec.perf.precision == "float64":  # before any layer exists: Keras reads it at build time
        tf.keras.backend.set_floatx("float64")
    if deterministic:  # a resumed run must redo the same steps: deterministic kernels
        tf.config.experimental.enable_op_determinism()
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
        if spec.perf.amp == "bf16":
            tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    else:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return gpus


def device_name(gpus: list[Any]) -> str:
    return gpus[0].name if gpus else f"cpu ({os.cpu_count()} cores)"

"""The worker's device and the speed options of ``RunSpec.perf`` (PyTorch).

The GPU path: model and batches on ``cuda:<local rank>``, optional autocast (bf16, or fp16
with dynamic loss scaling), channels_last, torch.compile, fp16 allreduce compression, and DALI
"mixed" decoding (lbbench/backends/torch/data.py). On a CPU-only worker the options that need
a GPU are refused before any work starts, with the option's name, rather than silently
ignored: a run labelled AMP that ran in fp32 would make a table lie.
"""

from __future__ import annotations

import contextlib
import os

import torch

from lbbench.methods import get_method
from lbbench.spec import PerfSpec, RunSpec


class PerfOptionError(Exception):
    """The worker prints it and exits 2; the runner records it as the failed run's reason."""


def pick_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check(spec: RunSpec, device: torch.device) -> None:
    """Refuses option combinations this worker cannot honour."""
    p = spec.perf
    if device.type != "cuda" and p.gpu_only():
        raise PerfOptionError(
            f"run {spec.run_id}: run.perf option(s) {', '.join(p.gpu_only())} need a CUDA GPU, and this worker "
            "sees none (torch.cuda.is_available() is False). On CPU lbbench trains in fp32 with NCHW tensors "
            "and DALI on the CPU; remove the option(s) from the suite's run.perf or run on GPU nodes."
        )
    kind = get_method(spec.method).step_kind
    if p.compile and not kind.compiles:
        raise PerfOptionError(
            f"run {spec.run_id}: run.perf compile: {spec.method}'s {kind.name} step cannot run compiled"
        )
    # fp16 loss scaling (unscale, skip on overflow) is wired only into the plain update path.
    if p.amp == "fp16" and kind.custom_update:
        raise PerfOptionError(
            f"run {spec.run_id}: run.perf amp: fp16 needs loss scaling, which lbbench applies only to methods "
            f"with the standard update; {spec.method} updates the weights itself. Use amp: bf16 (no scaling)."
        )
    if p.precision == "float64" and p.amp != "none":
        raise PerfOptionError(f"run {spec.run_id}: run.perf precision: float64 and amp: {p.amp} exclude each other")


def dtype(perf: PerfSpec) -> torch.dtype:
    """The parameters' and the inputs' dtype (float64 only for the machine-independent tests)."""
    return torch.float64 if perf.precision == "float64" else torch.float32


def prepare_model(model: torch.nn.Module, perf: PerfSpec, device: torch.device):
    """Moves the model; returns (model, forward): ``forward`` is the compiled module when asked,
    while ``model`` stays the plain one (state dicts, hooks, parameters keep their names)."""
    fmt = torch.channels_last if perf.channels_last else torch.preserve_format
    model = model.to(device, memory_format=fmt)  # type: ignore[call-overload]  # torch's stub lacks it
    model = model.to(dtype(perf))
    forward = torch.compile(model) if perf.compile else model
    return model, forward


def to_device(batch, device: torch.device, perf: PerfSpec):
    """Images and labels on the worker's device, each moved on its own: a DALI "mixed" pipeline
    hands the images over already on the GPU while its labels come from the CPU."""
    x, y = batch
    x = x if x.device == device else x.to(device, non_blocking=True)
    y = y if y.device == device else y.to(device, non_blocking=True)
    if perf.precision == "float64":
        x = x.double()
    if perf.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def autocast(perf: PerfSpec, device: torch.device):
    if perf.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if perf.amp == "bf16" else torch.float16)


def grad_scaler(perf: PerfSpec, device: torch.device):
    return torch.amp.GradScaler(device.type) if perf.amp == "fp16" else None


def average_args(hvd, perf: PerfSpec) -> dict:
    """Keyword arguments of an averaging allreduce. With fp16 compression the sum itself runs in
    fp16, and np fp16-loss-scaled gradients (up to 65,504 each) overflow it: each rank's part is
    scaled by 1/np before the sum instead of the sum after (Horovod's prescale)."""
    if perf.compression == "fp16":
        return dict(op=hvd.Sum, prescale_factor=1.0 / hvd.size(), compression=hvd.Compression.fp16)
    return dict(op=hvd.Average, compression=hvd.Compression.none)


class CudaEventTimer:
    """Step parts timed by CUDA events on the current stream (lbbench/worker/loop.py
    DeviceTimer): recording an event does not stop the host, the DALI prefetch or NCCL's
    streams as torch.cuda.synchronize did four or five times per micro-batch; the intervals
    are read once per epoch (``flush``)."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def begin(self) -> torch.cuda.Event:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def end(self, part: str, start: torch.cuda.Event) -> None:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        self.pending.append((part, start, e))

    def flush(self, times: dict[str, float]) -> None:
        if self.pending:
            self.pending[-1][2].synchronize()
        for part, start, end in self.pending:
            times[part] = times.get(part, 0.0) + start.elapsed_time(end) / 1000  # ms -> s
        self.pending.clear()


def timer(device: torch.device) -> CudaEventTimer | None:
    return CudaEventTimer() if device.type == "cuda" else None


def synchronizer(device: torch.device):
    """Timings of asynchronous GPU work mean something only after a synchronisation; on CPU
    every op has finished when it returns."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads of {os.cpu_count()})"

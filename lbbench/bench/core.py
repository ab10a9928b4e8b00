"""Framework-free parts of the benchmarks (lbbench/backends/<fw>/bench.py run them): the
RunSpec a benchmark trains with, the timed loop, the statistics Horovod's synthetic
benchmark reports (mean and 1.96 sigma over iterations, per worker and summed over workers),
and the result record both backends write."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbbench.methods import resolve_hparams
from lbbench.spec import DataSpec, LrSpec, PerfSpec, RunSpec
from lbbench.worker.roofline import peak_tflops, utilisation


def bench_spec(
    method: str,
    model: str,
    batch: int,
    size: int,
    data_dir: str | None = None,
    perf: dict[str, Any] | None = None,
    framework: str = "torch",
) -> RunSpec:
    big = model in ("resnet50", "resnet18")
    if data_dir:  # DALI over a folder in the ImageNet layout, decoded and resized to the model's size
        from lbbench.data.layout import list_split

        files, _, classes = list_split(Path(data_dir) / "train")
        data = DataSpec(
            kind="folder",
            path=data_dir,
            image_size=224 if big else 8,
            classes=1000 if big else len(classes),
            train_samples=len(files),
            eval_samples=len(list_split(Path(data_dir) / "val")[0]),
            augment="imagenet" if big else "none",
        )
    else:
        data = DataSpec(
            kind="synthetic",
            path=None,
            image_size=224 if big else 8,
            classes=1000 if big else 10,
            train_samples=batch * size * 1000,
            eval_samples=batch,
            augment="none",
        )
    lr = LrSpec(
        schedule="constant",
        peak_lr=0.01,
        warmup_epochs=0,
        warmup_start_lr=0,
        end_lr=0,
        poly_power=2,
        milestones=(),
        decay_factor=0.1,
        train_epochs=1,
    )
    hp = resolve_hparams(method, {})
    return RunSpec(
        suite="bench",
        method=method,
        label=method,
        hparams=hp,
        division="open",
        division_reason="bench",
        framework=framework,
        model=model,
        data=data,
        global_batch=batch * size,
        np=size,
        local_batch=batch,
        accum=1,
        bn_span=batch,
        seed=0,
        lr=lr,
        label_smoothing=0.1,
        target_top1=1.0,
        eval_every=1,
        max_epochs=10**6,
        stop_at_target=False,
        diag_every=0,
        eval_batch=batch,
        perf=PerfSpec(**(perf or {})),
    ).with_id()


def timed_iterations(
    step: Callable[[], object],  # its result (a loss) is ignored
    sync: Callable[[], None],
    reset: Callable[[], None],
    batch: int,
    warmup: int,
    iters: int,
    per_iter: int,
) -> tuple[list[float], float]:
    """images/s of each timed iteration (per worker) and the total timed seconds."""
    for _ in range(warmup):
        step()
    sync()
    reset()  # decomposition timers from zero: only the timed steps count
    rates, total = [], 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        for _ in range(per_iter):
            step()
        sync()
        dt = time.perf_counter() - t0
        total += dt
        rates.append(batch * per_iter / dt)
    return rates, total


def stats(xs: list[float]) -> dict[str, float]:
    m = statistics.fmean(xs)
    return dict(mean=m, ci95=1.96 * (statistics.stdev(xs) if len(xs) > 1 else 0.0))


def slowest_rank_wait(waits: list[list[float]]) -> float | None:
    """Seconds a rank spent, on average over the ranks, waiting in its allreduces for the slowest
    rank to get there, from every rank's seconds per allreduce wait (``waits[rank][k]``, the same
    collectives in the same order on every rank). A collective ends on all ranks together, so the
    rank that arrives last waits only for the communication that was not hidden - the minimum
    over ranks - and any other rank's wait beyond it is the time it arrived earlier: load imbalance
    (a rank's compute noise, a slower node), not communication. None with one rank or without
    host-timed waits (a GPU's allreduce is timed on the device)."""
    if len(waits) < 2 or not waits[0] or any(len(w) != len(waits[0]) for w in waits):
        return None
    floor = [min(k) for k in zip(*waits)]
    return statistics.fmean(sum(w - f for w, f in zip(rank, floor)) for rank in waits)


def summarize(
    per_rank: list[list[float]],
    parts: list[dict[str, float]],
    rank_totals_s: list[float],
    iters: int,
    per_iter: int,
    batch: int,
    waits: list[list[float]] | None = None,
) -> dict[str, Any]:
    """The headline - every worker's images over the timed seconds (images / time, not a mean of
    per-iteration rates, which one fast round inflates) - then per worker and total images/s per
    iteration (their spread), seconds per step, and the decomposition per step (mean over ranks);
    with every rank's allreduce waits, the part of the exposed allreduce that was waiting for the
    slowest rank (``slowest_rank_wait``).
    The timed seconds are the slowest rank's: each rank's parts fit inside its own window, and the
    windows differ by how long each rank waited at the start, so any one rank's (rank 0's) can be
    shorter than another rank's parts."""
    totals = [sum(r[i] for r in per_rank) for i in range(iters)]
    steps = iters * per_iter
    imbalance = slowest_rank_wait(waits or [])
    total_s = max(rank_totals_s)
    return dict(
        images_per_s=len(per_rank) * batch * steps / total_s,
        images_per_s_per_worker=stats([x for r in per_rank for x in r]),
        images_per_s_total=stats(totals),
        step_s=total_s / steps,
        decomposition_s_per_step={
            k: statistics.fmean(p[k] for p in parts) / steps for k in parts[0] if k != "allreduce_total"
        },
        # the allreduce's whole span, the part the backward pass hid included (not a part of the step)
        allreduce_total_s_per_step=statistics.fmean(p.get("allreduce_total", 0.0) for p in parts) / steps,
        # of the exposed allreduce (decomposition's "allreduce"), the wait for the slowest rank
        slowest_rank_wait_s_per_step=None if imbalance is None else imbalance / steps,
    )


def throughput_record(
    spec: RunSpec,
    framework: str,
    device: str,
    res: dict[str, Any],
    gflop: float,
    warmup: int,
    iters: int,
    per_iter: int,
    versions: dict[str, str],
) -> dict[str, Any]:
    """The JSON record of one `bench throughput` run (one np), whichever backend measured it."""
    return dict(
        benchmark="throughput",
        framework=framework,
        model=spec.model,
        batch_per_worker=spec.local_batch,
        np=spec.np,
        data="dali" if spec.data.kind == "folder" else "synthetic",
        data_dir=spec.data.path,
        device=device,
        perf=spec.perf.model_dump(mode="json"),
        warmup_batches=warmup,
        iters=iters,
        batches_per_iter=per_iter,
        **res,
        train_gflop_per_image=gflop,
        **utilisation(
            gflop, res["images_per_s_per_worker"]["mean"], peak_tflops(device, spec.perf.amp, spec.perf.peak_tflops)
        ),
        host=platform.node(),
        cpu_count=os.cpu_count(),
        **versions,
    )

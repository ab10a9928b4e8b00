"""Framework-free parts of the benchmarks (lbbench/backends/<fw>/bench.py run them): the
RunSpec a benchmark trains with, the timed loop, and the statistics Horovod's synthetic
benchmark reports (mean and 1.96 sigma over iterations, per worker and summed over workers)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

from lbbench.methods import resolve_hparams
from lbbench.spec import DataSpec, LrSpec, PerfSpec, RunSpec

HP = {"gradientmix": {"base": "sgd"}}


def bench_spec(method: str, model: str, batch: int, size: int, data_dir: str | None = None, perf: dict | None = None,
               framework: str = "torch") -> RunSpec:
    big = model in ("resnet50", "resnet18")
    if data_dir:     # DALI over a folder in the ImageNet layout, decoded and resized to the model's size
        from lbbench.data_layout import list_split
        files, _, classes = list_split(f"{data_dir}/train")
        data = DataSpec(kind="folder", path=data_dir, image_size=224 if big else 8, classes=1000 if big else len(classes),
                        train_samples=len(files), eval_samples=len(list_split(f"{data_dir}/val")[0]),
                        augment="imagenet" if big else "none")
    else:
        data = DataSpec(kind="synthetic", path=None, image_size=224 if big else 8, classes=1000 if big else 10,
                        train_samples=batch * size * 1000, eval_samples=batch, augment="none")
    lr = LrSpec(schedule="constant", peak_lr=0.01, warmup_epochs=0, warmup_start_lr=0, end_lr=0, poly_power=2,
                milestones=(), decay_factor=0.1, train_epochs=1)
    hp = resolve_hparams(method, HP.get(method, {}))
    return RunSpec(suite="bench", method=method, label=method, hparams=hp, division="open", division_reason="bench",
                   framework=framework, model=model, data=data, global_batch=batch * size, np=size, local_batch=batch,
                   accum=1, bn_span=batch, seed=0, lr=lr, label_smoothing=0.1, target_top1=1.0, eval_every=1,
                   max_epochs=10**6, stop_at_target=False, diag_every=0, eval_batch=batch,
                   perf=PerfSpec(**(perf or {}))).with_id()


def timed_iterations(step: Callable[[], None], sync: Callable[[], None], reset: Callable[[], None], batch: int,
                     warmup: int, iters: int, per_iter: int) -> tuple[list[float], float]:
    """images/s of each timed iteration (per worker) and the total timed seconds."""
    for _ in range(warmup):
        step()
    sync()
    reset()                      # decomposition timers from zero: only the timed steps count
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


def stats(xs: list[float]) -> dict:
    m = statistics.fmean(xs)
    return dict(mean=m, ci95=1.96 * (statistics.stdev(xs) if len(xs) > 1 else 0.0))


def summarize(per_rank: list[list[float]], parts: list[dict], total_s: float, iters: int, per_iter: int) -> dict:
    """Per worker and total images/s, seconds per step, and the decomposition per step
    (mean over ranks)."""
    totals = [sum(r[i] for r in per_rank) for i in range(iters)]
    steps = iters * per_iter
    return dict(images_per_s_per_worker=stats([x for r in per_rank for x in r]), images_per_s_total=stats(totals),
                step_s=total_s / steps,
                decomposition_s_per_step={k: statistics.fmean(p[k] for p in parts) / steps for k in parts[0]})

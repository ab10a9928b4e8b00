"""`lbbench bench optim|throughput` (PyTorch).

`optim`: the cost of one full training step - forward, backward,
allreduce, method update - for every registered method relative to SGD, on the available
device, with synthetic data. Periodic work is amortised: K-FAC's factors (every factor_every
steps) by timing a whole factor period, its inversions by timing one and dividing by
inverse_every; CBLR's curvature by timing a whole curvature_every period.

    python -m lbbench.backends.torch.bench optim --out FILE [--model resnet50 --batch 16 --steps 3]

`throughput`: images/s of SGD training steps (forward, backward, allreduce, update) as Horovod's
synthetic benchmark reports them - warm-up batches, then ``iters`` timed iterations of
``batches_per_iter`` steps; per worker mean and 95% interval over iterations (1.96 sigma), total =
the sum over workers per iteration - with the step-time decomposition of the timed steps. One
process per rank under a launcher (lbbench/cli.py runs it once per np):

    python -m lbbench.launch.gloo_local NP python -m lbbench.backends.torch.bench throughput --out FILE ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from lbbench.bench.core import bench_spec, summarize, throughput_record, timed_iterations
from lbbench.methods import REGISTRY


def bench_optim(model_name: str, batch: int, steps: int, methods: list[str]) -> dict:
    import horovod.torch as hvd

    from lbbench.backends.torch import perf
    from lbbench.backends.torch.data import train_loader
    from lbbench.backends.torch.loop import Loop
    from lbbench.backends.torch.model import build_model
    from lbbench.backends.torch.steps import build_method
    from lbbench.store.metrics import MetricsWriter

    hvd.init()
    device = perf.pick_device(hvd.local_rank())  # the rank's GPU where there is one
    rows = {}
    # The first model built in a process pays one-off costs (thread pools, allocator growth):
    # measure SGD once unrecorded so the baseline is not the slowest run.
    warm_up = True
    for name in ["sgd"] + methods:
        spec = bench_spec(name, model_name, batch, hvd.size())
        torch.manual_seed(0)
        model = build_model(spec.model, spec.data.classes).to(device)
        method = build_method(spec, model, hvd.rank(), hvd.size())
        loop = Loop(
            spec, model, method.optimizer, train_loader(spec, hvd.rank()), hvd, hvd.rank(), MetricsWriter(None), device
        )
        kind = REGISTRY[name].step_kind
        period = spec.hparams[kind.period_hparam] if kind.period_hparam else 1
        n = max(steps, period)
        method.step(loop, 1, 1)  # warm-up (allocations, first-touch)
        times = []
        for t in range(2, 2 + n):
            loop.sync()
            t0 = time.perf_counter()
            # a periodic method's timed period starts at step 1, so it holds one refresh
            method.step(loop, t if kind.period_hparam is None else t - 1, 1)
            loop.sync()  # a GPU's queued work belongs to the step
            times.append(time.perf_counter() - t0)
        step_s = statistics.fmean(times)
        extra = {}
        if kind.name == "kfac":  # the timed period included one inversion: amortise it properly
            inv = getattr(method, "last_invert_s", 0.0)
            step_s = (sum(times) - inv) / len(times) + inv / spec.hparams["inverse_every"]
            extra = dict(
                invert_s=inv, factor_every=spec.hparams["factor_every"], inverse_every=spec.hparams["inverse_every"]
            )
        if warm_up:
            warm_up = False
            continue
        rows[name] = dict(step_s=step_s, step_times_s=times, passes=REGISTRY[name].passes_per_step, **extra)
        print(f"{name:14s} {step_s:.3f} s/step", flush=True)
    base = rows["sgd"]["step_s"]
    for r in rows.values():
        r["relative_to_sgd"] = r["step_s"] / base
    return dict(
        benchmark="optim",
        model=model_name,
        batch_per_worker=batch,
        np=hvd.size(),
        device=perf.device_name(device),
        torch_threads=torch.get_num_threads(),
        host=platform.node(),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        methods=rows,
    )


def bench_throughput(
    model_name: str, batch: int, warmup: int, iters: int, per_iter: int, data_dir: str | None, perf_opts: dict
) -> dict | None:
    import horovod.torch as hvd

    from lbbench.backends.torch import perf
    from lbbench.backends.torch.data import train_loader
    from lbbench.backends.torch.loop import Loop
    from lbbench.backends.torch.model import build_model
    from lbbench.backends.torch.steps import build_method
    from lbbench.store.metrics import MetricsWriter

    hvd.init()
    spec = bench_spec("sgd", model_name, batch, hvd.size(), data_dir, perf_opts)
    device = perf.pick_device(hvd.local_rank())
    perf.check(spec, device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
    torch.manual_seed(0)
    model, forward = perf.prepare_model(build_model(spec.model, spec.data.classes), spec.perf, device)
    method = build_method(spec, model, hvd.rank(), hvd.size())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    gpu = device.index if spec.perf.dali_device == "gpu" else None
    loop = Loop(
        spec,
        model,
        method.optimizer,
        train_loader(spec, hvd.rank(), gpu=gpu),
        hvd,
        hvd.rank(),
        MetricsWriter(None),
        device=device,
        forward=forward,
    )
    steps = iter(range(1, 10**9))
    rates, total = timed_iterations(
        lambda: method.step(loop, next(steps), 1),
        loop.sync,
        lambda: loop.start_epoch(1, spec.global_batch, 1),
        batch,
        warmup,
        iters,
        per_iter,
    )
    per_rank = hvd.allgather_object(rates)  # [rank][iteration] images/s
    rank_totals = hvd.allgather_object(total)
    parts = hvd.allgather_object(dict(loop.times, allreduce_total=loop.comm_total_s))
    waits = hvd.allgather_object(loop.waits)
    if hvd.rank() != 0:
        return None
    from lbbench.backends.torch.flops import forward_gflop_per_image
    from lbbench.worker.roofline import TRAIN_FACTOR

    gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size, device)
    return throughput_record(
        spec,
        "torch",
        perf.device_name(device),
        summarize(per_rank, parts, rank_totals, iters, per_iter, batch, waits),
        gflop,
        warmup,
        iters,
        per_iter,
        {"torch": torch.__version__},
    )


def bench_bare(model_name: str, batch: int, warmup: int, iters: int, per_iter: int) -> dict:
    """The yardstick of `lbbench bench loop`: the plainest PyTorch training loop on lbbench's
    network and loss (the benchmark spec's label smoothing) - one fixed synthetic batch,
    torch.optim.SGD (momentum 0.9, weight decay 1e-4) - with no Horovod, no data pipeline, no
    timers: images / time over the timed iterations."""
    import torch.nn.functional as F

    from lbbench.backends.torch.model import build_model

    spec = bench_spec("sgd", model_name, batch, 1)
    torch.set_num_threads(os.cpu_count() or 1)  # what the lbbench worker takes with one rank
    torch.manual_seed(0)
    model = build_model(spec.model, spec.data.classes).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, spec.data.image_size, spec.data.image_size)
    y = torch.randint(0, spec.data.classes, (batch,))

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y, label_smoothing=spec.label_smoothing).backward()
        opt.step()

    rates, total = timed_iterations(step, lambda: None, lambda: None, batch, warmup, iters, per_iter)
    return dict(images_per_s=batch * iters * per_iter / total, rates=rates, torch_threads=torch.get_num_threads())


def main() -> None:
    ap = argparse.ArgumentParser(prog="lbbench bench")
    ap.add_argument("what", choices=["optim", "throughput", "bare"])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--methods", default=",".join(sorted(REGISTRY)))
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batches-per-iter", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--perf", default="{}", help="JSON of run.perf options")
    a = ap.parse_args()
    from lbbench.store.files import write_json

    if a.what == "bare":
        write_json(a.out, bench_bare(a.model, a.batch, a.warmup, a.iters, a.batches_per_iter))
        return
    if a.what == "throughput":
        from lbbench.backends.torch.perf import PerfOptionError

        try:
            res = bench_throughput(
                a.model, a.batch, a.warmup, a.iters, a.batches_per_iter, a.data_dir, json.loads(a.perf)
            )
        except PerfOptionError as e:
            raise SystemExit(f"lbbench: {e}") from None
        if res is not None:
            write_json(a.out, res)
        return
    methods = ["sgd"] + [m for m in a.methods.split(",") if m != "sgd"]
    result = bench_optim(a.model, a.batch, a.steps, methods)
    write_json(a.out, result)


if __name__ == "__main__":
    main()

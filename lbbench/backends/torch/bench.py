"""`lbbench bench optim` (PyTorch): the cost of one full training step - forward, backward,
allreduce, method update - for every registered method relative to SGD, on the available
device, with synthetic data. Periodic work is amortised: K-FAC's factors (every factor_every
steps) by timing a whole factor period, its inversions by timing one and dividing by
inverse_every; CBLR's curvature by timing a whole curvature_every period.

    python -m lbbench.backends.torch.bench optim --out FILE [--model resnet50 --batch 16 --steps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from lbbench.methods import REGISTRY, resolve_hparams
from lbbench.spec import DataSpec, LrSpec, RunSpec

HP = {"gradientmix": {"base": "sgd"}}


def _spec(method: str, model: str, batch: int, size: int) -> RunSpec:
    data = DataSpec(kind="synthetic", path=None, image_size=224 if model in ("resnet50", "resnet18") else 8,
                    classes=1000 if model in ("resnet50", "resnet18") else 10,
                    train_samples=batch * 1000, eval_samples=batch, augment="none")
    lr = LrSpec(schedule="constant", peak_lr=0.01, warmup_epochs=0, warmup_start_lr=0, end_lr=0, poly_power=2,
                milestones=(), decay_factor=0.1, train_epochs=1)
    hp = resolve_hparams(method, HP.get(method, {}))
    return RunSpec(suite="bench", method=method, label=method, hparams=hp, division="open", division_reason="bench",
                   framework="torch", model=model, data=data, global_batch=batch * size, np=size, local_batch=batch,
                   accum=1, bn_span=batch, seed=0, lr=lr, label_smoothing=0.1, target_top1=1.0, eval_every=1,
                   max_epochs=1, stop_at_target=False, diag_every=0, eval_batch=batch).with_id()


def bench_optim(model_name: str, batch: int, steps: int, methods: list[str]) -> dict:
    import horovod.torch as hvd
    from lbbench.backends.torch.data import train_loader
    from lbbench.backends.torch.loop import Loop
    from lbbench.backends.torch.model import build_model
    from lbbench.backends.torch.optim.methods import build_method
    from lbbench.metrics import MetricsWriter

    hvd.init()
    rows = {}
    # The first model built in a process pays one-off costs (thread pools, allocator growth):
    # measure SGD once unrecorded so the baseline is not the slowest run.
    warm_up = True
    for name in ["sgd"] + methods:
        spec = _spec(name, model_name, batch, hvd.size())
        torch.manual_seed(0)
        model = build_model(spec.model, spec.data.classes)
        method = build_method(spec, model, hvd.rank(), hvd.size())
        loop = Loop(spec, model, method.optimizer, train_loader(spec, hvd.rank()), hvd, hvd.rank(), MetricsWriter(None))
        period = {"kfac": spec.hparams.get("factor_every", 1), "cblr": spec.hparams.get("curvature_every", 1)}.get(name, 1)
        n = max(steps, period)
        method.step(loop, 1, 1)            # warm-up (allocations, first-touch)
        times = []
        for t in range(2, 2 + n):
            t0 = time.perf_counter()
            method.step(loop, t if name not in ("kfac", "cblr") else t - 1, 1)
            times.append(time.perf_counter() - t0)
        step_s = statistics.fmean(times)
        extra = {}
        if name == "kfac":   # the timed period included one inversion: amortise it properly
            inv = getattr(method, "last_invert_s", 0.0)
            step_s = (sum(times) - inv) / len(times) + inv / spec.hparams["inverse_every"]
            extra = dict(invert_s=inv, factor_every=spec.hparams["factor_every"],
                         inverse_every=spec.hparams["inverse_every"])
        if warm_up:
            warm_up = False
            continue
        rows[name] = dict(step_s=step_s, step_times_s=times, passes=REGISTRY[name].passes_per_step, **extra)
        print(f"{name:14s} {step_s:.3f} s/step", flush=True)
    base = rows["sgd"]["step_s"]
    for r in rows.values():
        r["relative_to_sgd"] = r["step_s"] / base
    return dict(benchmark="optim", model=model_name, batch_per_worker=batch, np=hvd.size(),
                device="cpu", torch_threads=torch.get_num_threads(), host=platform.node(),
                cpu_count=os.cpu_count(), torch=torch.__version__, methods=rows)


def main() -> None:
    ap = argparse.ArgumentParser(prog="lbbench bench optim")
    ap.add_argument("what", choices=["optim"])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--methods", default=",".join(sorted(REGISTRY)))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    methods = ["sgd"] + [m for m in a.methods.split(",") if m != "sgd"]
    result = bench_optim(a.model, a.batch, a.steps, methods)
    from lbbench.store import write_json
    write_json(a.out, result)


if __name__ == "__main__":
    main()

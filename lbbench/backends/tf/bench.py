"""`lbbench bench throughput --framework tf`: the PyTorch benchmark's measurement
(lbbench/throughput.py) on the TensorFlow worker's model, loop and SGD step.

    python -m lbbench.launch.gloo_local NP python -m lbbench.backends.tf.bench throughput --out FILE ...
"""
from __future__ import annotations

import argparse
import json
import os
import platform

import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads
import tensorflow as tf

from lbbench.store import write_json
from lbbench.throughput import bench_spec, summarize, timed_iterations


def bench_throughput(model_name: str, batch: int, warmup: int, iters: int, per_iter: int, data_dir: str | None,
                     perf_opts: dict) -> dict | None:
    import horovod.tensorflow as hvd
    from lbbench.backends.tf.data import train_loader
    from lbbench.backends.tf.flops import forward_gflop_per_image
    from lbbench.backends.tf.loop import Loop, build_method
    from lbbench.backends.tf.model import build_model
    from lbbench.metrics import MetricsWriter
    from lbbench.roofline import TRAIN_FACTOR, peak_tflops, utilisation

    hvd.init()
    spec = bench_spec("sgd", model_name, batch, hvd.size(), data_dir, perf_opts, framework="tf")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and spec.perf.gpu_only():
        raise SystemExit(f"lbbench: {', '.join(spec.perf.gpu_only())} need a GPU and TensorFlow sees none")
    if not gpus:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
    tf.keras.utils.set_random_seed(0)
    model = build_model(spec.model, spec.data.classes, spec.data.image_size)
    for v, value in zip(model.variables, hvd.broadcast_object([v.numpy() for v in model.variables], 0)):
        v.assign(value)
    method = build_method(spec, model, hvd.rank(), hvd.size())
    loop = Loop(spec, model, method.optimizer, train_loader(spec, hvd.rank()), hvd, hvd.rank(), MetricsWriter(None))
    steps = iter(range(1, 10**9))
    rates, total = timed_iterations(lambda: method.step(loop, next(steps), 1), lambda: None,
                                    lambda: loop.start_epoch(1, spec.global_batch, 1), batch, warmup, iters, per_iter)
    per_rank = hvd.allgather_object(rates)
    parts = hvd.allgather_object(dict(loop.times))
    if hvd.rank() != 0:
        return None
    gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size)
    res = summarize(per_rank, parts, total, iters, per_iter)
    device = gpus[0].name if gpus else f"cpu ({os.cpu_count()} cores)"
    return dict(benchmark="throughput", framework="tf", model=model_name, batch_per_worker=batch, np=hvd.size(),
                data="dali" if data_dir else "synthetic", data_dir=data_dir, device=device,
                perf=spec.perf.model_dump(mode="json"), warmup_batches=warmup, iters=iters, batches_per_iter=per_iter,
                **res, train_gflop_per_image=gflop,
                **utilisation(gflop, res["images_per_s_per_worker"]["mean"],
                              peak_tflops(device, spec.perf.amp, spec.perf.peak_tflops)),
                host=platform.node(), cpu_count=os.cpu_count(), tensorflow=tf.__version__)


def main() -> None:
    ap = argparse.ArgumentParser(prog="lbbench bench (tf)")
    ap.add_argument("what", choices=["throughput"])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batches-per-iter", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--perf", default="{}")
    a = ap.parse_args()
    res = bench_throughput(a.model, a.batch, a.warmup, a.iters, a.batches_per_iter, a.data_dir, json.loads(a.perf))
    if res is not None:
        write_json(a.out, res)


if __name__ == "__main__":
    main()

"""`lbbench bench throughput --framework tf`: the PyTorch benchmark's measurement
(lbbench/bench/core.py) on the TensorFlow worker's model, loop and SGD step.

    python -m lbbench.launch.gloo_local NP python -m lbbench.backends.tf.bench throughput --out FILE ...
"""

from __future__ import annotations

import argparse
import json

import tensorflow as tf

import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads
from lbbench.bench.core import bench_spec, summarize, throughput_record, timed_iterations
from lbbench.store.files import write_json


def bench_throughput(
    model_name: str, batch: int, warmup: int, iters: int, per_iter: int, data_dir: str | None, perf_opts: dict
) -> dict | None:
    import horovod.tensorflow as hvd

    from lbbench.backends.tf import perf
    from lbbench.backends.tf.data import train_loader
    from lbbench.backends.tf.flops import forward_gflop_per_image
    from lbbench.backends.tf.loop import Loop
    from lbbench.backends.tf.model import build_model
    from lbbench.backends.tf.steps import build_method
    from lbbench.store.metrics import MetricsWriter
    from lbbench.worker.roofline import TRAIN_FACTOR

    hvd.init()
    spec = bench_spec("sgd", model_name, batch, hvd.size(), data_dir, perf_opts, framework="tf")
    refused = perf.refusals(spec, tf.config.list_physical_devices("GPU"))
    if refused:
        raise SystemExit(f"lbbench: {'; '.join(refused)}")
    gpus = perf.configure(spec, hvd, deterministic=False)
    tf.keras.utils.set_random_seed(0)
    model = build_model(spec.model, spec.data.classes, spec.data.image_size)
    for v, value in zip(model.variables, hvd.broadcast_object([v.numpy() for v in model.variables], 0)):
        v.assign(value)
    method = build_method(spec, model, hvd.rank(), hvd.size())
    gpu = perf.dali_gpu(spec, hvd, gpus)
    loop = Loop(
        spec, model, method.optimizer, train_loader(spec, hvd.rank(), gpu=gpu), hvd, hvd.rank(), MetricsWriter(None)
    )
    steps = iter(range(1, 10**9))
    rates, total = timed_iterations(
        lambda: method.step(loop, next(steps), 1),
        lambda: None,
        lambda: loop.start_epoch(1, spec.global_batch, 1),
        batch,
        warmup,
        iters,
        per_iter,
    )
    per_rank = hvd.allgather_object(rates)
    rank_totals = hvd.allgather_object(total)
    parts = hvd.allgather_object(dict(loop.times, allreduce_total=loop.comm_total_s))
    waits = hvd.allgather_object(loop.waits)
    if hvd.rank() != 0:
        return None
    gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size)
    return throughput_record(
        spec,
        "tf",
        perf.device_name(gpus),
        summarize(per_rank, parts, rank_totals, iters, per_iter, batch, waits),
        gflop,
        warmup,
        iters,
        per_iter,
        {"tensorflow": tf.__version__},
    )


def bench_bare(model_name: str, batch: int, warmup: int, iters: int, per_iter: int) -> dict:
    """The yardstick of `lbbench bench loop`: the plainest TensorFlow training loop on lbbench's
    network and loss (the benchmark spec's label smoothing) - one fixed synthetic batch, forward,
    backward and Keras' SGD (momentum 0.9) in one tf.function - with no Horovod, no data
    pipeline, no timers, on the CPU thread pools of
    lbbench's one-rank worker (as the PyTorch yardstick takes its threads): images / time."""
    from lbbench.backends.tf import perf
    from lbbench.backends.tf.loop import per_sample_loss
    from lbbench.backends.tf.model import build_model

    if not tf.config.list_physical_devices("GPU"):
        perf.cpu_threads(1)  # the thread pools lbbench's one-rank worker takes
    spec = bench_spec("sgd", model_name, batch, 1, framework="tf")
    tf.keras.utils.set_random_seed(0)
    model = build_model(spec.model, spec.data.classes, spec.data.image_size)
    opt = tf.keras.optimizers.SGD(0.01, momentum=0.9)
    x = tf.random.normal([batch, spec.data.image_size, spec.data.image_size, 3])
    y = tf.random.uniform([batch], 0, spec.data.classes, tf.int64)

    def train_step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_sample_loss(model(x, training=True), y, spec.label_smoothing))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    step = tf.function(train_step)

    rates, total = timed_iterations(lambda: step().numpy(), lambda: None, lambda: None, batch, warmup, iters, per_iter)
    return dict(images_per_s=batch * iters * per_iter / total, rates=rates)


def main() -> None:
    ap = argparse.ArgumentParser(prog="lbbench bench (tf)")
    ap.add_argument("what", choices=["throughput", "bare"])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batches-per-iter", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--perf", default="{}")
    a = ap.parse_args()
    if a.what == "bare":
        write_json(a.out, bench_bare(a.model, a.batch, a.warmup, a.iters, a.batches_per_iter))
        return
    res = bench_throughput(a.model, a.batch, a.warmup, a.iters, a.batches_per_iter, a.data_dir, json.loads(a.perf))
    if res is not None:
        write_json(a.out, res)


if __name__ == "__main__":
    main()

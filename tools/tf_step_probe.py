"""Where a TensorFlow step's time goes, in one process (so every variant shares the machine's
state), resnet_tiny, one fixed batch, rounds alternating between:
  lbbench_step  lbbench's own step: the Standard strategy and Loop (Horovod, one rank)
  two_graphs    the forward/backward tf.function, then lbbench's compiled SGD update
  one_graph     the same forward/backward and SGD update rule in one tf.function
  bare_keras    forward, backward and Keras' SGD in one tf.function (`bench loop`'s yardstick)
on the CPU thread pools lbbench's one-rank worker takes (--pools worker) or TensorFlow's
defaults (--pools default). Prints images/s (median of the rounds) and each relative to bare.

    python tools/tf_step_probe.py [--pools worker|default] [--batch 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", choices=("worker", "default"), default="worker")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="steps per variant and round")
    a = ap.parse_args()

    import horovod.tensorflow as hvd
    import tensorflow as tf

    from lbbench.backends.tf import perf
    from lbbench.backends.tf.loop import Loop, per_sample_loss
    from lbbench.backends.tf.model import build_model
    from lbbench.backends.tf.optim import Optimizer
    from lbbench.backends.tf.steps import build_method
    from lbbench.bench.core import bench_spec
    from lbbench.store.metrics import MetricsWriter

    hvd.init()
    if a.pools == "worker":
        perf.cpu_threads(1)
    spec = bench_spec("sgd", "resnet_tiny", a.batch, 1, framework="tf")
    tf.keras.utils.set_random_seed(0)
    size = spec.data.image_size
    x = tf.random.normal([a.batch, size, size, 3])
    y = tf.random.uniform([a.batch], 0, spec.data.classes, tf.int64)
    hp = dict(momentum=0.9, weight_decay=5e-5, nesterov=False, exclude_bn_bias=True, lr_convention="outside")

    def loss_of(model):
        return tf.reduce_mean(per_sample_loss(model(x, training=True), y, spec.label_smoothing))

    two = build_model(spec.model, spec.data.classes, size)
    two_opt = Optimizer("sgd", hp, two.trainable_variables, 0.01)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = loss_of(two)
        return loss, tape.gradient(loss, two.trainable_variables)

    def two_graphs() -> float:
        loss, g = grads()
        two_opt.step(list(g))
        return float(loss)

    one = build_model(spec.model, spec.data.classes, size)
    one_opt = Optimizer("sgd", hp, one.trainable_variables, 0.01)
    one_opt.step([tf.zeros_like(v) for v in one.trainable_variables])  # its slots, before tracing
    live = list(range(len(one.trainable_variables)))

    @tf.function
    def fused(sc):
        with tf.GradientTape() as tape:
            loss = loss_of(one)
        one_opt._apply(live, tape.gradient(loss, one.trainable_variables), sc)
        return loss

    def one_graph() -> float:
        one_opt.t += 1
        return float(fused({k: tf.constant(v) for k, v in one_opt.spec.scalars(hp, one_opt.lr, one_opt.t).items()}))

    bare = build_model(spec.model, spec.data.classes, size)
    keras_sgd = tf.keras.optimizers.SGD(0.01, momentum=0.9)

    @tf.function
    def bare_step():
        with tf.GradientTape() as tape:
            loss = loss_of(bare)
        keras_sgd.apply_gradients(zip(tape.gradient(loss, bare.trainable_variables), bare.trainable_variables))
        return loss

    own = build_model(spec.model, spec.data.classes, size)
    method = build_method(spec, own, 0, 1)
    loop = Loop(spec, own, method.optimizer, itertools.repeat((x, y)), hvd, 0, MetricsWriter(None))
    loop.start_epoch(1, spec.global_batch, 1)
    count = itertools.count(1)

    variants = dict(
        lbbench_step=lambda: method.step(loop, next(count), 1),
        two_graphs=two_graphs,
        one_graph=one_graph,
        bare_keras=lambda: float(bare_step()),
    )
    for step in variants.values():
        for _ in range(10):  # traced, warm
            step()
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.rounds):
        for name, step in variants.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            rates[name].append(a.batch * a.steps / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps(dict(pools=a.pools, images_per_s={k: round(v) for k, v in med.items()})))
    print(json.dumps({k: round(v / med["bare_keras"], 3) for k, v in med.items()}))


if __name__ == "__main__":
    main()

"""One side of a PyTorch-vs-TensorFlow comparison, in its own process (no process imports both
horovod.torch and TensorFlow):

    python tests/equiv_worker.py torch|tf RUN_YAML IN.npz OUT.npz STEPS

IN.npz holds the framework-neutral weights (w0, w1, ... as lbbench/backends/torch/model.py's
to_canonical) and STEPS x accum micro-batches (x0.., NCHW; y0..). The worker builds the
backend's own model, loads the weights, records logits on micro-batch 0 (eval and train mode),
then runs STEPS training steps through the backend's real Loop and method classes (Horovod
world of one) with the run's LR schedule, and writes the weights and logits to OUT.npz and
the metrics rows (diagnostics when the run asks for them) to OUT.npz.metrics.jsonl.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(fw: str, run_yaml: str, src: str, dst: str, steps: int) -> None:
    from lbbench.spec import RunSpec
    from lbbench.store.metrics import MetricsWriter
    from lbbench.worker.batch_schedule import lr_at
    from lbbench.worker.schedules import make_schedule

    spec = RunSpec.load(Path(run_yaml))
    data = np.load(src)
    weights = [data[f"w{i}"] for i in range(sum(k.startswith("w") for k in data.files))]
    n = sum(k.startswith("x") for k in data.files)
    xs, ys = [data[f"x{i}"] for i in range(n)], [data[f"y{i}"] for i in range(n)]
    sched = make_schedule(spec.lr, spec.steps_per_epoch)
    span = spec.bn_span if spec.bn_span < spec.local_batch else None
    out = {}
    if fw == "torch":
        import horovod.torch as hvd
        import torch

        from lbbench.backends.torch.loop import Loop
        from lbbench.backends.torch.model import build_model, load_canonical, to_canonical
        from lbbench.backends.torch.steps import build_method

        hvd.init()
        torch.manual_seed(0)
        model = build_model(spec.model, spec.data.classes, bn_span=span)
        load_canonical(model, weights)
        x0 = torch.from_numpy(xs[0])
        with torch.no_grad():
            out["eval_logits"] = model.eval()(x0).numpy()
            out["train_logits"] = model.train()(x0).numpy()
        load_canonical(model, weights)  # the train-mode forward moved the BN statistics
        method = build_method(spec, model, 0, 1)
        batches = iter([(torch.from_numpy(x), torch.from_numpy(y).long()) for x, y in zip(xs, ys)])
        loop = Loop(spec, model, method.optimizer, batches, hvd, 0, MetricsWriter(Path(dst + ".metrics.jsonl")))
        loop.start_epoch(1, spec.global_batch, spec.accum)
        for step in range(1, steps + 1):
            for g in method.optimizer.param_groups:
                g["lr"] = lr_at(spec, sched, 1, step, step)
            method.step(loop, step, 1)
        final = to_canonical(model)
    else:
        import horovod.tensorflow as hvd
        import tensorflow as tf

        import lbbench.backends.tf  # noqa: F401
        from lbbench.backends.tf.loop import Loop
        from lbbench.backends.tf.model import build_model, load_canonical, to_canonical
        from lbbench.backends.tf.steps import build_method

        hvd.init()
        model = build_model(spec.model, spec.data.classes, spec.data.image_size, bn_span=span)
        load_canonical(model, weights)
        x0 = tf.constant(xs[0].transpose(0, 2, 3, 1))
        out["eval_logits"] = model(x0, training=False).numpy()
        out["train_logits"] = model(x0, training=True).numpy()
        load_canonical(model, weights)
        method = build_method(spec, model, 0, 1)
        batches = iter([(tf.constant(x.transpose(0, 2, 3, 1)), tf.constant(y, tf.int64)) for x, y in zip(xs, ys)])
        loop = Loop(spec, model, method.optimizer, batches, hvd, 0, MetricsWriter(Path(dst + ".metrics.jsonl")))
        loop.start_epoch(1, spec.global_batch, spec.accum)
        for step in range(1, steps + 1):
            method.optimizer.lr = lr_at(spec, sched, 1, step, step)
            method.step(loop, step, 1)
        final = to_canonical(model)
    np.savez(dst, **out, **{f"w{i}": w for i, w in enumerate(final)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))

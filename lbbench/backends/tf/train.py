"""The TensorFlow worker: ``python -m lbbench.backends.tf.train RUN_DIR`` on every rank.

The run itself is the shared driver's (lbbench/worker/driver.py), as for PyTorch; this module gives it
the TensorFlow parts: lbbench's Keras ResNet, the method's step strategy and update rule, the
DALI TensorFlow-plugin loaders, BN statistics averaged over ranks before evaluations and
checkpoints, NumPy checkpoints. Variables are broadcast from rank 0 once they exist (Horovod's
broadcast of the global variables; lbbench's model creates them before the first step, so step
1 already runs on equal weights).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads
from lbbench.spec import RunSpec


class TFWorker:
    def __init__(self, spec: RunSpec, hvd, gpus: list, ckpt: dict | None, progress, metrics):
        from lbbench.backends.tf.data import eval_batches, train_loader
        from lbbench.backends.tf.flops import forward_gflop_per_image
        from lbbench.backends.tf.loop import Loop
        from lbbench.backends.tf.model import build_model
        from lbbench.backends.tf.perf import dali_gpu, device_name
        from lbbench.backends.tf.steps import build_method
        from lbbench.worker.roofline import TRAIN_FACTOR

        self.spec, self.hvd = spec, hvd
        rank, size = hvd.rank(), hvd.size()
        tf.keras.utils.set_random_seed(spec.seed)
        span = spec.bn_span if spec.bn_span < spec.local_batch else None
        self.model = model = build_model(spec.model, spec.data.classes, spec.data.image_size, bn_span=span)
        self.method = method = build_method(spec, model, rank, size)
        if ckpt:
            for v, value in zip(model.variables, ckpt["model"]):
                v.assign(value)
            method.optimizer.load_state_dict(ckpt["optimizer"])
            method.load_state_dict(ckpt["method"])
        else:
            initial = hvd.broadcast_object([v.numpy() for v in model.variables], 0, name="lbbench.initial_weights")
            for v, value in zip(model.variables, initial):
                v.assign(value)
        gpu = dali_gpu(spec, hvd, gpus)
        self.loop = Loop(
            spec,
            model,
            method.optimizer,
            train_loader(spec, rank, epoch=progress.epoch + 1, gpu=gpu),
            hvd,
            rank,
            metrics,
        )
        self.eval_batches = eval_batches(spec, rank, size, gpu=gpu)
        self.device = device_name(gpus)
        self.train_gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size)
        self._predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=1))

    def set_lr(self, lr: float) -> None:
        self.method.optimizer.lr = lr

    def train_mode(self) -> None:
        pass  # Keras layers take training= per call

    def evaluate(self) -> float:
        sync_bn_statistics(self.model, self.hvd)
        correct = count = 0
        for x, y in self.eval_batches():
            correct += int(tf.reduce_sum(tf.cast(self._predict(x) == y, tf.int32)))
            count += int(y.shape[0])
        total = self.hvd.allreduce(tf.constant([correct, count], tf.int64), op=self.hvd.Sum)
        correct, count = (int(v) for v in total.numpy())
        if count != self.spec.data.eval_samples:
            raise RuntimeError(f"evaluated {count} samples, expected {self.spec.data.eval_samples}")
        return correct / count

    def checkpoint_payload(self) -> dict:
        sync_bn_statistics(self.model, self.hvd)
        method_state = self.method.state_dict()  # collective for K-FAC (inverses gathered)
        return dict(
            model=[v.numpy() for v in self.model.variables],
            optimizer=self.method.optimizer.state_dict(),
            method=method_state,
        )

    def digest(self) -> str:
        h = hashlib.sha256()
        for v in self.model.trainable_variables:
            h.update(np.ascontiguousarray(v.numpy()).tobytes())
        return h.hexdigest()[:16]

    def save_final(self, run_dir: Path) -> None:
        # w<i>: trainable variables, s<i>: BN running statistics (rank 0's unless an evaluation synced them)
        np.savez(
            run_dir / "final.npz",
            **{f"w{i}": v.numpy() for i, v in enumerate(self.model.trainable_variables)},
            **{f"s{i}": v.numpy() for i, v in enumerate(self.model.non_trainable_variables)},
        )


def main(run_dirs: list[Path]) -> int:
    """Trains the run dir(s): several are a warm launch (lbbench/worker/pool.py) - one Horovod
    world, one TensorFlow runtime, a fresh Keras session and model per cell."""
    import horovod.tensorflow as hvd

    from lbbench.backends.dali_pipeline import use_threads
    from lbbench.backends.tf import checkpoint, perf
    from lbbench.worker import devices, driver, pool

    first = RunSpec.load(run_dirs[0] / "run.yaml")
    hvd.init()
    # the device once, before the placement check's allgather starts TensorFlow's runtime
    # (after which its thread pools can no longer be sized)
    gpus = perf.configure(first, hvd, deterministic=True)
    if devices.refused(hvd, len(tf.config.list_physical_devices("GPU")), "TensorFlow"):
        return 2
    use_threads(hvd.local_size())  # DALI's threads: this worker's share of the node's CPUs

    def cell(run_dir: Path) -> int:
        spec = RunSpec.load(run_dir / "run.yaml")
        if hvd.size() != spec.np:
            raise SystemExit(f"run {spec.run_id} needs np={spec.np} Horovod processes, got {hvd.size()}")
        refused = perf.refusals(spec, tf.config.list_physical_devices("GPU"))
        if refused:
            print(f"lbbench: run {spec.run_id}: run.perf: {'; '.join(refused)}", file=sys.stderr, flush=True)
            return 2
        perf.configure_cell(spec, gpus)
        return driver.run(
            spec,
            run_dir,
            hvd,
            checkpoint,
            lambda ckpt, progress, metrics: TFWorker(spec, hvd, gpus, ckpt, progress, metrics),
        )

    return pool.run_cells(run_dirs, hvd.rank() == 0, cell)


def sync_bn_statistics(model, hvd) -> None:
    """BN running statistics differ per rank (each saw its own micro-batches): average them."""
    stats = [v for v in model.non_trainable_variables if "moving_" in v.name]
    for v, avg in zip(stats, hvd.grouped_allreduce([tf.convert_to_tensor(v) for v in stats], op=hvd.Average)):
        v.assign(avg)


if __name__ == "__main__":
    sys.exit(main([Path(a) for a in sys.argv[1:]]))

"""The TensorFlow worker: ``python -m lbbench.backends.tf.train RUN_DIR`` on every rank.

The PyTorch worker's contract and files (lbbench/backends/torch/train.py): the same RunSpec,
virtual workers (accum micro-batches per rank, one grouped allreduce), LR schedule, MLLOG,
metrics.jsonl with the step-time decomposition, checkpoints and summary.json. Variables are
broadcast from rank 0 after they are created (Horovod's BroadcastGlobalVariables, as
horovod.tensorflow's examples do it after the first step; lbbench's model has its variables
before the first step, so the broadcast comes first and step 1 already runs on equal weights).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import lbbench.backends.tf  # noqa: F401 - TF_USE_LEGACY_KERAS before TensorFlow loads
import numpy as np
import tensorflow as tf
from mlperf_logging.mllog import constants as C

from lbbench import checkpoint_files
from lbbench.health import accuracy_collapsed, loss_diverged
from lbbench.metrics import MetricsWriter
from lbbench.mllog import RunLog
from lbbench.roofline import TRAIN_FACTOR, peak_tflops, utilisation
from lbbench.spec import RunSpec
from lbbench.store import write_json
from lbbench.suite import make_schedule
from lbbench.worker_common import PARTS, Progress, decomposition, lost_seconds


def main(run_dir: Path) -> int:
    import horovod.tensorflow as hvd
    from lbbench.backends.tf.data import eval_batches, train_loader
    from lbbench.backends.tf.flops import forward_gflop_per_image
    from lbbench.backends.tf.loop import Loop, build_method
    from lbbench.backends.tf.model import build_model
    from lbbench.batch_schedule import epoch_batch, steps_in_epoch
    from lbbench.batch_schedule import lr_at as batch_lr_at

    spec = RunSpec.load(run_dir / "run.yaml")
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    if size != spec.np:
        raise SystemExit(f"run {spec.run_id} needs np={spec.np} Horovod processes, got {size}")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and spec.perf.gpu_only():
        print(f"lbbench: run {spec.run_id}: run.perf option(s) {', '.join(spec.perf.gpu_only())} need a GPU and this "
              "TensorFlow worker sees none; remove them from the suite's run.perf or run on GPU nodes",
              file=sys.stderr, flush=True)
        return 2
    if spec.perf.amp == "fp16":
        print(f"lbbench: run {spec.run_id}: run.perf amp: fp16 needs loss scaling, which the TensorFlow backend does "
              "not implement; use amp: bf16", file=sys.stderr, flush=True)
        return 2
    if gpus:
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank() % len(gpus)], True)
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
        if spec.perf.amp != "none":
            tf.keras.mixed_precision.set_global_policy("mixed_bfloat16" if spec.perf.amp == "bf16" else "mixed_float16")
    else:
        threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    lead = rank == 0

    ckpt = None
    if lead:
        ckpt = checkpoint_files.load_newest(run_dir)
        if ckpt is not None:
            lost = lost_seconds(run_dir, ckpt["saved_at"])
            checkpoint_files.rewind_logs(run_dir, ckpt["log_bytes"])
            ckpt["progress"]["time_lost_s"] += lost
    ckpt = hvd.broadcast_object(ckpt, root_rank=0, name="lbbench.checkpoint")
    p = Progress(**ckpt["progress"]) if ckpt else Progress()
    if ckpt:
        p.preemptions += 1

    log = RunLog(run_dir / "mllog.txt" if lead else None)
    metrics = MetricsWriter(run_dir / "metrics.jsonl" if lead else None)
    S = spec.steps_per_epoch
    if not ckpt:
        log.header(spec, S, platform=os.environ.get("LBBENCH_PLATFORM", ""))

    tf.keras.utils.set_random_seed(spec.seed)
    span = spec.bn_span if spec.bn_span < spec.local_batch else None
    model = build_model(spec.model, spec.data.classes, spec.data.image_size, bn_span=span)
    method = build_method(spec, model, rank, size)
    opt = method.optimizer
    if ckpt:
        for v, value in zip(model.variables, ckpt["model"]):
            v.assign(value)
        opt.load_state_dict(ckpt["optimizer"])
        method.load_state_dict(ckpt["method"])
    else:
        for v, value in zip(model.variables, hvd.broadcast_object([v.numpy() for v in model.variables], 0,
                                                                   name="lbbench.initial_weights")):
            v.assign(value)
    gpu = 0 if (gpus and spec.perf.dali_device == "gpu") else None
    loop = Loop(spec, model, opt, train_loader(spec, rank, epoch=p.epoch + 1, gpu=gpu), hvd, rank, metrics)
    loop.backward_passes, loop.allreduces = p.backward_passes, p.allreduces
    evaluate_batches = eval_batches(spec, rank, size, gpu=gpu)
    train_gflop = TRAIN_FACTOR * forward_gflop_per_image(model, spec.data.image_size)
    sched = make_schedule(spec.lr, S)
    if ckpt:
        log.event("lbbench_resumed", {"from_epoch": p.epoch, "preemptions": p.preemptions})
    else:
        log.end(C.INIT_STOP)
        log.start(C.RUN_START)
    t_start = time.time() - p.elapsed_s

    block_first = spec.eval_every * (p.epoch // spec.eval_every) + 1
    for epoch in range(p.epoch + 1, spec.max_epochs + 1):
        if p.reached and spec.stop_at_target:
            break
        if (epoch - 1) % spec.eval_every == 0:
            block_first = epoch
            log.start(C.BLOCK_START, first_epoch_num=epoch, epoch_count=min(spec.eval_every, spec.max_epochs - epoch + 1))
        log.start(C.EPOCH_START, epoch_num=epoch)
        B, accum = epoch_batch(spec, epoch)
        if (B, accum) != epoch_batch(spec, max(epoch - 1, 1)):
            log.event("lbbench_batch_change", {"global_batch": B, "gradient_accumulation_steps": accum}, epoch_num=epoch)
        loop.start_epoch(epoch, B, accum)
        S_e = steps_in_epoch(spec, epoch)
        t_epoch, loss_sum, n_steps, step_s = time.perf_counter(), 0.0, 0, 0.0
        for t in range(S_e):
            p.step += 1
            opt.lr = lr = batch_lr_at(spec, sched, epoch, t + 1, p.step)
            t_step = time.perf_counter()
            step_loss = method.step(loop, p.step, epoch)
            step_s += time.perf_counter() - t_step
            n_steps += 1
            if loss_diverged(step_loss):
                p.status, p.diverged_reason = "diverged", f"{loss_diverged(step_loss)} at step {p.step}"
                break
            loss_sum += step_loss
            if lead and (t % max(1, S_e // 10) == 0 or t == S_e - 1):
                metrics.write("step", epoch=epoch, step=p.step, loss=step_loss, lr=lr)
        epoch_s = time.perf_counter() - t_epoch
        p.train_s += epoch_s
        p.samples += n_steps * B
        log.end(C.EPOCH_STOP, epoch_num=epoch)
        log.event("tracked_stats", {"throughput": n_steps * B / epoch_s}, step=epoch)
        row = dict(epoch=epoch, step=p.step, global_batch=B, train_loss=loss_sum / n_steps, epoch_s=epoch_s,
                   images_per_s=n_steps * B / epoch_s, discarded=loop.discarded,
                   **decomposition(loop.times, step_s, epoch_s, n_steps * B))
        for k in PARTS:
            p.parts[k] = p.parts.get(k, 0.0) + row[f"{k}_s"]
        if p.status == "diverged":
            metrics.write("epoch", diverged_at_step=p.step, **row)
            log.end(C.BLOCK_STOP, first_epoch_num=block_first)
            p.epoch = epoch
            break
        top1 = collapse = None
        if epoch % spec.eval_every == 0 or epoch == spec.max_epochs:
            log.start(C.EVAL_START, epoch_num=epoch)
            te = time.perf_counter()
            top1 = evaluate(model, evaluate_batches, hvd, spec.data.eval_samples)
            log.end(C.EVAL_STOP, epoch_num=epoch)
            log.event(C.EVAL_ACCURACY, top1, epoch_num=epoch)
            log.end(C.BLOCK_STOP, first_epoch_num=block_first)
            row["eval_s"] = time.perf_counter() - te
            p.parts["eval"] = p.parts.get("eval", 0.0) + row["eval_s"]
            collapse = accuracy_collapsed(p.best, top1, spec.data.classes)
            p.best = top1 if p.best is None else max(p.best, top1)
            if p.reached is None and top1 >= spec.target_top1:
                p.reached = dict(epochs_to_target=epoch, steps_to_target=p.step, samples_to_target=p.samples,
                                 time_to_target_s=time.time() - t_start)
                p.status = "success"
        p.elapsed_s = time.time() - t_start
        metrics.write("epoch", top1=top1, elapsed_s=p.elapsed_s, **row)
        p.epoch = epoch
        if top1 is not None and collapse and not p.reached:
            p.status, p.diverged_reason = "diverged", f"{collapse} at epoch {epoch}"
            break
        if spec.checkpoint_every and epoch % spec.checkpoint_every == 0 and epoch < spec.max_epochs \
                and not (p.reached and spec.stop_at_target):
            sync_bn_statistics(model, hvd)
            p.backward_passes, p.allreduces = loop.backward_passes, loop.allreduces
            if lead:
                checkpoint_files.save(run_dir, epoch, dict(
                    model=[v.numpy() for v in model.variables], optimizer=opt.state_dict(),
                    method=method.state_dict(), progress=asdict(p), saved_at=time.time()))

    log.end(C.RUN_STOP, status="success" if p.reached else "aborted")
    digests = hvd.allgather_object(param_digest(model))
    if lead:
        # w<i>: trainable variables, s<i>: BN running statistics (rank 0's unless an evaluation synced them)
        np.savez(run_dir / "final.npz", **{f"w{i}": v.numpy() for i, v in enumerate(model.trainable_variables)},
                 **{f"s{i}": v.numpy() for i, v in enumerate(model.non_trainable_variables)})
        device = gpus[0].name if gpus else f"cpu ({os.cpu_count()} cores)"
        summary = dict(run_id=spec.run_id, suite=spec.suite, status=p.status, method=spec.method, label=spec.label,
                       global_batch=spec.global_batch, framework=spec.framework, np=spec.np, accum=spec.accum,
                       seed=spec.seed, division=spec.division, target_top1=spec.target_top1,
                       best_top1=p.best, epochs_run=p.epoch, steps_run=p.step, samples_run=p.samples,
                       wall_s=time.time() - t_start, train_s=p.train_s, images_per_s=p.samples / max(p.train_s, 1e-9),
                       backward_passes=loop.backward_passes, allreduces=loop.allreduces,
                       device=device, perf=spec.perf.model_dump(mode="json"),
                       time_parts_s=p.parts, compute_images_per_s=p.samples / max(p.parts.get("compute", 0.0), 1e-9),
                       train_gflop_per_image=train_gflop,
                       **utilisation(train_gflop, p.samples / max(p.train_s, 1e-9),
                                     peak_tflops(device, spec.perf.amp, spec.perf.peak_tflops)),
                       param_digests=digests, ranks_agree=len(set(digests)) == 1,
                       preemptions=p.preemptions, time_lost_s=p.time_lost_s, time_to_target_valid=p.preemptions == 0,
                       epochs_to_target=None, steps_to_target=None, samples_to_target=None, time_to_target_s=None)
        if p.status == "diverged":
            summary["diverged_at_step"] = p.step
            summary["diverged_reason"] = p.diverged_reason
        summary.update(p.reached or {})
        metrics.close()
        write_json(run_dir / "summary.json", summary)
    return 0


def param_digest(model) -> str:
    h = hashlib.sha256()
    for v in model.trainable_variables:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]


def sync_bn_statistics(model, hvd) -> None:
    stats = [v for v in model.non_trainable_variables if "moving_" in v.name]
    for v, avg in zip(stats, hvd.grouped_allreduce([tf.convert_to_tensor(v) for v in stats], op=hvd.Average)):
        v.assign(avg)


def evaluate(model, batches, hvd, expected: int) -> float:
    sync_bn_statistics(model, hvd)
    correct = count = 0
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=1))
    for x, y in batches():
        correct += int(tf.reduce_sum(tf.cast(predict(x) == y, tf.int32)))
        count += int(y.shape[0])
    total = hvd.allreduce(tf.constant([correct, count], tf.int64), op=hvd.Sum)
    correct, count = (int(v) for v in total.numpy())
    if count != expected:
        raise RuntimeError(f"evaluated {count} samples, expected {expected}")
    return correct / count


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

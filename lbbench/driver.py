"""The training run every backend's worker drives (framework-free): resume from a checkpoint,
the MLLOG, epochs of steps under the shared LR schedule, evaluation, divergence, checkpoints
and the summary. A backend supplies a :class:`Worker` - model, loop and method of its
framework - and its Horovod module; nothing here imports a framework.

One step = K = np x accum micro-batches (virtual workers): each rank runs ``accum``
forward/backward passes on its micro-batches, gradients are averaged over the micro-batches
and then over ranks with one grouped Horovod allreduce, and the method updates the weights
with the LR of the shared schedule. Rank 0 writes mllog.txt, metrics.jsonl, summary.json and
the checkpoints; a restarted worker resumes from the newest checkpoint.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Protocol

from mlperf_logging.mllog import constants as C

from lbbench import checkpoint_files
from lbbench.batch_schedule import epoch_batch, steps_in_epoch
from lbbench.batch_schedule import lr_at as batch_lr_at
from lbbench.health import accuracy_collapsed, loss_diverged
from lbbench.metrics import MetricsWriter
from lbbench.mllog import RunLog
from lbbench.roofline import peak_tflops, utilisation
from lbbench.spec import RunSpec
from lbbench.store import write_json
from lbbench.suite import make_schedule
from lbbench.worker_common import PARTS, Progress, decomposition, lost_seconds


class Worker(Protocol):
    """What a backend gives the driver (lbbench/backends/<fw>/train.py)."""
    loop: Any            # start_epoch(), times, discarded, backward_passes, allreduces, sync()
    method: Any          # step(loop, step, epoch) -> the step's global mean loss
    device: str          # for the summary and the roofline's peak
    train_gflop: float   # per training image (lbbench/roofline.py)

    def set_lr(self, lr: float) -> None: ...
    def train_mode(self) -> None: ...
    def evaluate(self) -> float: ...
    def checkpoint_payload(self) -> dict: ...   # collective (BN statistics, K-FAC inverses)
    def digest(self) -> str: ...                # of this rank's trainable weights
    def save_final(self, run_dir: Path) -> None: ...


class CheckpointIO(Protocol):
    def save(self, run_dir: Path, epoch: int, payload: dict) -> Path: ...
    def load_newest(self, run_dir: Path) -> dict | None: ...


def run(spec: RunSpec, run_dir: Path, hvd, io: CheckpointIO,
        make_worker: Callable[[dict | None, Progress, MetricsWriter], Worker]) -> int:
    lead = hvd.rank() == 0
    # Resume: rank 0 reads the newest complete checkpoint and cuts the logs back to it.
    ckpt = None
    if lead:
        ckpt = io.load_newest(run_dir)
        if ckpt is not None:
            lost = lost_seconds(run_dir, ckpt["saved_at"])
            checkpoint_files.rewind_logs(run_dir, ckpt["log_bytes"])
            ckpt["progress"]["time_lost_s"] += lost
    # An explicit name: the default is the type name, which differs between rank 0 (dict) and
    # the others (None) and would deadlock the broadcast.
    ckpt = hvd.broadcast_object(ckpt, root_rank=0, name="lbbench.checkpoint")
    p = Progress(**ckpt["progress"]) if ckpt else Progress()
    if ckpt:
        p.preemptions += 1

    log = RunLog(run_dir / "mllog.txt" if lead else None)
    metrics = MetricsWriter(run_dir / "metrics.jsonl" if lead else None)
    S = spec.steps_per_epoch   # of the run's global batch; batch schedules vary it per epoch
    if not ckpt:
        log.header(spec, S, platform=os.environ.get("LBBENCH_PLATFORM", ""))
    w = make_worker(ckpt, p, metrics)
    loop, method = w.loop, w.method
    loop.backward_passes, loop.allreduces = p.backward_passes, p.allreduces
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
        w.train_mode()
        B, accum = epoch_batch(spec, epoch)
        if (B, accum) != epoch_batch(spec, max(epoch - 1, 1)):
            log.event("lbbench_batch_change", {"global_batch": B, "gradient_accumulation_steps": accum}, epoch_num=epoch)
        loop.start_epoch(epoch, B, accum)
        S_e = steps_in_epoch(spec, epoch)
        t_epoch, loss_sum, n_steps, step_s = time.perf_counter(), 0.0, 0, 0.0
        for t in range(S_e):
            p.step += 1
            lr = batch_lr_at(spec, sched, epoch, t + 1, p.step)
            w.set_lr(lr)
            t_step = time.perf_counter()
            step_loss = method.step(loop, p.step, epoch)
            loop.sync()
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
            top1 = w.evaluate()
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
            p.backward_passes, p.allreduces = loop.backward_passes, loop.allreduces
            payload = w.checkpoint_payload()
            if lead:
                io.save(run_dir, epoch, dict(payload, progress=asdict(p), saved_at=time.time()))

    log.end(C.RUN_STOP, status="success" if p.reached else "aborted")
    # Data-parallel invariant: every rank must hold the same weights. Recorded (and checked by
    # the tests) rather than assumed.
    digests = hvd.allgather_object(w.digest())
    if lead:
        w.save_final(run_dir)
        ips = p.samples / max(p.train_s, 1e-9)
        summary = dict(run_id=spec.run_id, suite=spec.suite, status=p.status, method=spec.method, label=spec.label,
                       global_batch=spec.global_batch, framework=spec.framework, np=spec.np, accum=spec.accum,
                       seed=spec.seed, division=spec.division, target_top1=spec.target_top1,
                       best_top1=p.best, epochs_run=p.epoch, steps_run=p.step, samples_run=p.samples,
                       wall_s=time.time() - t_start, train_s=p.train_s, images_per_s=ips,
                       backward_passes=loop.backward_passes, allreduces=loop.allreduces,
                       device=w.device, perf=spec.perf.model_dump(mode="json"),
                       time_parts_s=p.parts, compute_images_per_s=p.samples / max(p.parts.get("compute", 0.0), 1e-9),
                       train_gflop_per_image=w.train_gflop,
                       **utilisation(w.train_gflop, ips, peak_tflops(w.device, spec.perf.amp, spec.perf.peak_tflops)),
                       param_digests=digests, ranks_agree=len(set(digests)) == 1,
                       preemptions=p.preemptions, time_lost_s=p.time_lost_s,
                       # MLPerf's clock may not pause: a resumed run's epochs and steps to target
                       # stand, its time to target does not.
                       time_to_target_valid=p.preemptions == 0,
                       epochs_to_target=None, steps_to_target=None, samples_to_target=None, time_to_target_s=None)
        if p.status == "diverged":
            summary["diverged_at_step"] = p.step
            summary["diverged_reason"] = p.diverged_reason
        summary.update(p.reached or {})
        metrics.close()
        write_json(run_dir / "summary.json", summary)
    return 0

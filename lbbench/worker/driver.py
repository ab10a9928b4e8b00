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
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, cast

from filelock import FileLock, Timeout
from mlperf_logging.mllog import constants as C

from lbbench.data.check import UndecodableImage
from lbbench.spec import RunSpec
from lbbench.store.metrics import MetricsWriter
from lbbench.store.summary import ERROR_PREFIX, RunSummary
from lbbench.worker import checkpoints, faults
from lbbench.worker.batch_schedule import epoch_batch, steps_in_epoch
from lbbench.worker.batch_schedule import lr_at as batch_lr_at
from lbbench.worker.health import accuracy_collapsed, loss_diverged
from lbbench.worker.mllog import RunLog
from lbbench.worker.progress import PARTS, Progress, decomposition, lost_seconds
from lbbench.worker.roofline import peak_note, peak_tflops, utilisation
from lbbench.worker.schedules import Schedule, make_schedule


class Worker(Protocol):
    """What a backend gives the driver (lbbench/backends/<fw>/train.py)."""

    loop: Any  # start_epoch(), times, discarded, backward_passes, allreduces, sync()
    method: Any  # step(loop, step, epoch) -> the step's global mean loss
    device: str  # for the summary and the roofline's peak
    train_gflop: float  # per training image (lbbench/worker/roofline.py)

    def set_lr(self, lr: float) -> None: ...
    def train_mode(self) -> None: ...
    def evaluate(self) -> float: ...
    def checkpoint_payload(self) -> dict[str, Any]: ...  # collective (BN statistics, K-FAC inverses)
    def digest(self) -> str: ...  # of this rank's trainable weights
    def save_final(self, run_dir: Path) -> None: ...


class CheckpointIO(Protocol):
    def save(self, run_dir: Path, epoch: int, payload: dict[str, Any], keep: int = 2) -> Path: ...
    def load_newest(self, run_dir: Path) -> dict[str, Any] | None: ...


def next_eval_epoch(spec: RunSpec, epoch: int) -> int:
    """The first evaluation at or after ``epoch``: epochs e with (e + eval_offset) % eval_every
    == 0 (MLPerf's offset: NVIDIA evaluates at 3, 7, 11, ... with every 4 and offset 1), and
    always the last epoch."""
    k, o = spec.eval_every, spec.eval_offset
    return min(epoch + (-(epoch + o)) % k, spec.max_epochs)


def block_start(spec: RunSpec, epoch: int) -> int:
    """The first epoch of the evaluation block ``epoch`` belongs to (MLLOG block_start)."""
    k, o = spec.eval_every, spec.eval_offset
    last_eval = epoch - 1 - (epoch - 1 + o) % k  # the latest evaluation epoch before ``epoch``
    return max(last_eval + 1, 1)


MakeWorker = Callable[[dict[str, Any] | None, Progress, MetricsWriter], Worker]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _execute(r: Run, make_worker: MakeWorker) -> int:
    try:
        return r.execute(make_worker)
    except UndecodableImage as e:
        # The line the runner takes the failure's reason from (lbbench/launch/runner.py).
        print(f"{ERROR_PREFIX}{e} (check the data with `lbbench data check`)", file=sys.stderr, flush=True)
        return 1


def run(spec: RunSpec, run_dir: Path, hvd: Any, io: CheckpointIO, make_worker: MakeWorker) -> int:
    if hvd.rank() != 0:
        return _execute(Run(spec, run_dir, hvd, io), make_worker)
    # Rank 0 holds the run's training lock for its whole life (the OS releases it when the process
    # dies, however it dies): while it is held, no other lbbench run starts workers for this cell.
    lock = FileLock(str(run_dir / ".train.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = (run_dir / ".train.owner").read_text().strip() if (run_dir / ".train.owner").exists() else "?"
        print(
            f"lbbench: {run_dir} is being trained by another worker ({owner}); not starting a second one",
            file=sys.stderr,
            flush=True,
        )
        return 3
    try:
        (run_dir / ".train.owner").write_text(f"worker pid {os.getpid()} on {socket.gethostname()}\n")
        return _execute(Run(spec, run_dir, hvd, io), make_worker)
    finally:
        lock.release()


class Run:
    def __init__(self, spec: RunSpec, run_dir: Path, hvd: Any, io: CheckpointIO):
        self.spec, self.run_dir, self.hvd, self.io = spec, run_dir, hvd, io
        self.rank = hvd.rank()
        self.lead = self.rank == 0
        self.log = RunLog(run_dir / "mllog.txt" if self.lead else None)
        self.metrics = MetricsWriter(run_dir / "metrics.jsonl" if self.lead else None)
        self.p = Progress()

    def execute(self, make_worker: MakeWorker) -> int:
        spec = self.spec
        ckpt = self._resume()
        S = spec.steps_per_epoch  # of the run's global batch; batch schedules vary it per epoch
        if not ckpt:
            self.log.header(spec, S, platform=os.environ.get("LBBENCH_PLATFORM", ""))
        w = make_worker(ckpt, self.p, self.metrics)
        w.loop.backward_passes, w.loop.allreduces = self.p.backward_passes, self.p.allreduces
        sched = make_schedule(spec.lr, S)
        if ckpt:
            self.log.event("lbbench_resumed", {"from_epoch": self.p.epoch, "preemptions": self.p.preemptions})
        else:
            self.log.end(C.INIT_STOP)
            self.log.start(C.RUN_START)
        self.t_start = time.time() - self.p.elapsed_s
        self.block_first = block_start(spec, self.p.epoch + 1)
        for epoch in range(self.p.epoch + 1, spec.max_epochs + 1):
            if self.p.reached and spec.stop_at_target:
                break
            if not self._epoch(w, sched, epoch):
                break
        self._finish(w)
        return 0

    def _resume(self) -> dict[str, Any] | None:
        """Rank 0 reads the newest complete checkpoint and cuts the logs back to it; every rank
        gets it by broadcast."""
        ckpt = None
        if self.lead:
            checkpoints.clean_temporaries(self.run_dir)
            ckpt = self.io.load_newest(self.run_dir)
            if ckpt is not None:
                lost = lost_seconds(self.run_dir, ckpt["saved_at"])
                checkpoints.rewind_logs(self.run_dir, ckpt["log_bytes"])
                ckpt["progress"]["time_lost_s"] += lost
        # An explicit name: the default is the type name, which differs between rank 0 (dict) and
        # the others (None) and would deadlock the broadcast.
        ckpt = cast("dict[str, Any] | None", self.hvd.broadcast_object(ckpt, root_rank=0, name="lbbench.checkpoint"))
        if ckpt:
            self.p = Progress(**ckpt["progress"])
            self.p.preemptions += 1
        return ckpt

    def _epoch(self, w: Worker, sched: Schedule, epoch: int) -> bool:
        """Trains, evaluates and checkpoints one epoch; False when the run must stop."""
        spec, p, log, loop = self.spec, self.p, self.log, w.loop
        if block_start(spec, epoch) == epoch:
            self.block_first = epoch
            log.start(C.BLOCK_START, first_epoch_num=epoch, epoch_count=next_eval_epoch(spec, epoch) - epoch + 1)
        log.start(C.EPOCH_START, epoch_num=epoch)
        w.train_mode()
        B, accum = epoch_batch(spec, epoch)
        if (B, accum) != epoch_batch(spec, max(epoch - 1, 1)):
            log.event(
                "lbbench_batch_change", {"global_batch": B, "gradient_accumulation_steps": accum}, epoch_num=epoch
            )
        loop.start_epoch(epoch, B, accum)
        row = self._train_steps(w, sched, epoch, B)
        for k in PARTS:
            p.parts[k] = p.parts.get(k, 0.0) + row[f"{k}_s"]
        p.allreduce_total_s += row["allreduce_total_s"]
        if p.status == "diverged":
            self.metrics.write("epoch", diverged_at_step=p.step, **row)
            log.end(C.BLOCK_STOP, first_epoch_num=self.block_first)
            p.epoch = epoch
            return False
        top1 = collapse = None
        if next_eval_epoch(spec, epoch) == epoch:
            top1, collapse = self._evaluate(w, epoch, row)
        p.elapsed_s = time.time() - self.t_start
        self.metrics.write("epoch", top1=top1, elapsed_s=p.elapsed_s, **row)
        p.epoch = epoch
        if top1 is not None and collapse and not p.reached:
            p.status, p.diverged_reason = "diverged", f"{collapse} at epoch {epoch}"
            return False
        if (
            spec.checkpoint_every
            and epoch % spec.checkpoint_every == 0
            and epoch < spec.max_epochs
            and not (p.reached and spec.stop_at_target)
        ):
            self._checkpoint(w, epoch)
        return True

    def _train_steps(self, w: Worker, sched: Schedule, epoch: int, B: int) -> dict[str, Any]:
        """The epoch's steps; returns its metrics row (loss, images/s, time decomposition)."""
        spec, p, loop = self.spec, self.p, w.loop
        S_e = steps_in_epoch(spec, epoch)
        t_epoch, loss_sum, n_steps, step_s = time.perf_counter(), 0.0, 0, 0.0
        for t in range(S_e):
            p.step += 1
            lr = batch_lr_at(spec, sched, epoch, t + 1, p.step)
            w.set_lr(lr)
            t_step = time.perf_counter()
            if t == S_e // 2:
                faults.reach("mid_epoch", self.rank)
            step_loss = w.method.step(loop, p.step, epoch)
            loop.sync()
            step_s += time.perf_counter() - t_step
            n_steps += 1
            if loss_diverged(step_loss):
                p.status, p.diverged_reason = "diverged", f"{loss_diverged(step_loss)} at step {p.step}"
                break
            loss_sum += step_loss
            if self.lead and (t % max(1, S_e // 10) == 0 or t == S_e - 1):
                self.metrics.write("step", epoch=epoch, step=p.step, loss=step_loss, lr=lr)
        epoch_s = time.perf_counter() - t_epoch
        p.train_s += epoch_s
        p.samples += n_steps * B
        self.log.end(C.EPOCH_STOP, epoch_num=epoch)
        self.log.event("tracked_stats", {"throughput": n_steps * B / epoch_s}, step=epoch)
        return dict(
            epoch=epoch,
            step=p.step,
            global_batch=B,
            train_loss=loss_sum / n_steps,
            epoch_s=epoch_s,
            images_per_s=n_steps * B / epoch_s,
            discarded=loop.discarded,
            **decomposition(loop.times, step_s, epoch_s, n_steps * B, loop.comm_total_s),
        )

    def _evaluate(self, w: Worker, epoch: int, row: dict[str, Any]) -> tuple[float, str | None]:
        spec, p, log = self.spec, self.p, self.log
        faults.reach("eval", self.rank)
        log.start(C.EVAL_START, epoch_num=epoch)
        te = time.perf_counter()
        top1 = w.evaluate()
        log.end(C.EVAL_STOP, epoch_num=epoch)
        log.event(C.EVAL_ACCURACY, top1, epoch_num=epoch)
        log.end(C.BLOCK_STOP, first_epoch_num=self.block_first)
        row["eval_s"] = time.perf_counter() - te
        p.parts["eval"] = p.parts.get("eval", 0.0) + row["eval_s"]
        collapse = accuracy_collapsed(p.best, top1, spec.data.classes)
        p.best = top1 if p.best is None else max(p.best, top1)
        if p.reached is None and top1 >= spec.target_top1:
            p.reached = dict(
                epochs_to_target=epoch,
                steps_to_target=p.step,
                samples_to_target=p.samples,
                time_to_target_s=time.time() - self.t_start,
            )
            p.status = "success"
        return top1, collapse

    def _checkpoint(self, w: Worker, epoch: int) -> None:
        self.p.backward_passes, self.p.allreduces = w.loop.backward_passes, w.loop.allreduces
        payload = w.checkpoint_payload()
        if self.lead:
            self.io.save(
                self.run_dir,
                epoch,
                dict(payload, progress=asdict(self.p), saved_at=time.time()),
                self.spec.keep_checkpoints,
            )

    def _finish(self, w: Worker) -> None:
        spec, p, loop = self.spec, self.p, w.loop
        self.log.end(C.RUN_STOP, status="success" if p.reached else "aborted")
        faults.reach("after_run_stop", self.rank)
        # Data-parallel invariant: every rank must hold the same weights. Recorded (and checked by
        # the tests) rather than assumed.
        digests = self.hvd.allgather_object(w.digest())
        if not self.lead:
            return
        w.save_final(self.run_dir)
        ips = p.samples / max(p.train_s, 1e-9)
        note = peak_note(w.device, spec.perf.amp, spec.perf.peak_tflops)
        if note:
            print(f"lbbench: {note}", file=sys.stderr, flush=True)
        summary = RunSummary(
            run_id=spec.run_id,
            suite=spec.suite,
            status=p.status,
            method=spec.method,
            label=spec.label,
            global_batch=spec.global_batch,
            framework=spec.framework,
            np=spec.np,
            accum=spec.accum,
            seed=spec.seed,
            division=spec.division,
            target_top1=spec.target_top1,
            data_fingerprint=spec.data.fingerprint,
            study=spec.study,
            trial=spec.trial,
            tuned=spec.tuned,
            final_of=spec.final_of,
            best_top1=p.best,
            epochs_run=p.epoch,
            steps_run=p.step,
            samples_run=p.samples,
            wall_s=time.time() - self.t_start,
            train_s=p.train_s,
            images_per_s=ips,
            backward_passes=loop.backward_passes,
            allreduces=loop.allreduces,
            device=w.device,
            # one Horovod worker per accelerator (a GPU; on CPU nodes, a worker's share of the cores)
            accelerator=w.device,
            accelerators=spec.np,
            nodes=int(self.hvd.cross_size()) if hasattr(self.hvd, "cross_size") else None,
            host_cpu=cpu_model(),
            host_cpus=os.cpu_count(),
            time_to_train_s=time.time() - self.t_start if p.reached and p.preemptions == 0 else None,
            perf=spec.perf.model_dump(mode="json"),
            time_parts_s=p.parts,
            allreduce_total_s=p.allreduce_total_s,
            compute_images_per_s=p.samples / max(p.parts.get("compute", 0.0), 1e-9),
            train_gflop_per_image=w.train_gflop,
            **utilisation(w.train_gflop, ips, peak_tflops(w.device, spec.perf.amp, spec.perf.peak_tflops), spec.np),
            param_digests=digests,
            ranks_agree=len(set(digests)) == 1,
            preemptions=p.preemptions,
            time_lost_s=p.time_lost_s,
            # MLPerf's clock may not pause: a resumed run's epochs and steps to target stand,
            # its time to target does not.
            time_to_target_valid=p.preemptions == 0,
            **(p.reached or {}),
            **(dict(diverged_at_step=p.step, diverged_reason=p.diverged_reason) if p.status == "diverged" else {}),
        )
        self.metrics.close()
        summary.write(self.run_dir)

"""The PyTorch worker: ``python -m lbbench.backends.torch.train RUN_DIR`` on every rank.

One step = K = np x accum micro-batches (virtual workers): each rank runs ``accum``
forward/backward passes on its micro-batches, gradients are averaged over the micro-batches
and then over ranks with one grouped Horovod allreduce, and the method updates the weights
with the LR of the shared schedule. Rank 0 writes mllog.txt, metrics.jsonl and summary.json.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from pathlib import Path

import torch

from lbbench.metrics import MetricsWriter
from lbbench.mllog import RunLog
from lbbench.spec import RunSpec
from lbbench.store import write_json
from lbbench.suite import make_schedule
from mlperf_logging.mllog import constants as C


def main(run_dir: Path) -> int:
    import horovod.torch as hvd
    from lbbench.backends.torch.data import eval_batches, train_loader
    from lbbench.backends.torch.model import build_model
    from lbbench.backends.torch.loop import Loop
    from lbbench.batch_schedule import epoch_batch, steps_in_epoch
    from lbbench.batch_schedule import lr_at as batch_lr_at
    from lbbench.backends.torch.optim.methods import build_method

    spec = RunSpec.load(run_dir / "run.yaml")
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    if size != spec.np:
        raise SystemExit(f"run {spec.run_id} needs np={spec.np} Horovod processes, got {size}")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // hvd.local_size()))
    lead = rank == 0
    log = RunLog(run_dir / "mllog.txt" if lead else None)
    metrics = MetricsWriter(run_dir / "metrics.jsonl" if lead else None)
    S = spec.steps_per_epoch   # of the run's global batch; batch schedules vary it per epoch
    log.header(spec, S, platform=os.environ.get("LBBENCH_PLATFORM", ""))

    torch.manual_seed(spec.seed)
    span = spec.bn_span if spec.bn_span < spec.local_batch else None
    model = build_model(spec.model, spec.data.classes, bn_span=span)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    method = build_method(spec, model, rank, size)
    opt = method.optimizer
    loop = Loop(spec, model, opt, train_loader(spec, rank), hvd, rank, metrics)
    evaluate_batches = eval_batches(spec, rank, size)
    sched = make_schedule(spec.lr, S)
    log.end(C.INIT_STOP)
    log.start(C.RUN_START)
    t_start = time.time()

    step, best, reached, status, train_time, samples = 0, 0.0, None, "not_reached", 0.0, 0
    block_first = 1
    for epoch in range(1, spec.max_epochs + 1):
        if (epoch - 1) % spec.eval_every == 0:
            block_first = epoch
            log.start(C.BLOCK_START, first_epoch_num=epoch, epoch_count=min(spec.eval_every, spec.max_epochs - epoch + 1))
        log.start(C.EPOCH_START, epoch_num=epoch)
        model.train()
        B, accum = epoch_batch(spec, epoch)
        if (B, accum) != (loop.global_batch, loop.accum):
            log.event("lbbench_batch_change", {"global_batch": B, "gradient_accumulation_steps": accum}, epoch_num=epoch)
        loop.start_epoch(epoch, B, accum)
        S_e = steps_in_epoch(spec, epoch)
        t_epoch, loss_sum = time.perf_counter(), 0.0
        for t in range(S_e):
            step += 1
            lr = batch_lr_at(spec, sched, epoch, t + 1, step)
            for g in opt.param_groups:
                g["lr"] = lr
            step_loss = method.step(loop, step, epoch)
            if not math.isfinite(step_loss):
                status = "diverged"
                break
            loss_sum += step_loss
            if lead and (t % max(1, S_e // 10) == 0 or t == S_e - 1):
                metrics.write("step", epoch=epoch, step=step, loss=step_loss, lr=lr)
        epoch_s = time.perf_counter() - t_epoch
        train_time += epoch_s
        n_steps = t + 1
        samples += n_steps * B
        log.end(C.EPOCH_STOP, epoch_num=epoch)
        log.event("tracked_stats", {"throughput": n_steps * B / epoch_s}, step=epoch)
        row = dict(epoch=epoch, step=step, global_batch=B, train_loss=loss_sum / n_steps, epoch_s=epoch_s,
                   images_per_s=n_steps * B / epoch_s, discarded=loop.discarded, **{f"{k}_s": v for k, v in loop.times.items()})
        if status == "diverged":
            metrics.write("epoch", diverged_at_step=step, **row)
            log.end(C.BLOCK_STOP, first_epoch_num=block_first)
            break
        top1 = None
        if epoch % spec.eval_every == 0 or epoch == spec.max_epochs:
            log.start(C.EVAL_START, epoch_num=epoch)
            te = time.perf_counter()
            top1 = evaluate(model, evaluate_batches, hvd, spec.data.eval_samples)
            log.end(C.EVAL_STOP, epoch_num=epoch)
            log.event(C.EVAL_ACCURACY, top1, epoch_num=epoch)
            log.end(C.BLOCK_STOP, first_epoch_num=block_first)
            row["eval_s"] = time.perf_counter() - te
            best = max(best, top1)
            if reached is None and top1 >= spec.target_top1:
                reached = dict(epochs_to_target=epoch, steps_to_target=step, samples_to_target=samples, time_to_target_s=time.time() - t_start)
                status = "success"
        metrics.write("epoch", top1=top1, elapsed_s=time.time() - t_start, **row)
        if reached and spec.stop_at_target:
            break
    log.end(C.RUN_STOP, status="success" if reached else "aborted")
    # Data-parallel invariant: every rank must hold the same weights. Recorded (and checked by
    # the tests) rather than assumed.
    digests = hvd.allgather_object(param_digest(model))
    if lead:
        torch.save({k: v for k, v in model.state_dict().items()}, run_dir / "final.pt")
        if hasattr(method, "pre"):
            torch.save(method.pre.state(), run_dir / "kfac_factors.pt")
        summary = dict(run_id=spec.run_id, suite=spec.suite, status=status, method=spec.method, label=spec.label,
                       global_batch=spec.global_batch, framework=spec.framework, np=spec.np, accum=spec.accum,
                       seed=spec.seed, division=spec.division, target_top1=spec.target_top1,
                       best_top1=best, epochs_run=epoch, steps_run=step, samples_run=samples,
                       wall_s=time.time() - t_start, train_s=train_time, images_per_s=samples / max(train_time, 1e-9),
                       backward_passes=loop.backward_passes, allreduces=loop.allreduces,
                       param_digests=digests, ranks_agree=len(set(digests)) == 1,
                       epochs_to_target=None, steps_to_target=None, samples_to_target=None, time_to_target_s=None)
        if status == "diverged":
            summary["diverged_at_step"] = step
        summary.update(reached or {})
        metrics.close()
        write_json(run_dir / "summary.json", summary)
    return 0


def param_digest(model) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def evaluate(model, batches, hvd, expected: int) -> float:
    # BN running statistics differ per rank (each saw its own micro-batches): average them so
    # every rank evaluates the same model.
    buffers = [b for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
    for b, avg in zip(buffers, hvd.grouped_allreduce(buffers, op=hvd.Average)):
        b.copy_(avg)
    model.eval()
    correct = count = 0
    for x, y in batches():
        correct += int((model(x).argmax(1) == y).sum())
        count += len(y)
    correct, count = (int(v) for v in hvd.allreduce(torch.tensor([correct, count]), op=hvd.Sum))
    if count != expected:
        raise RuntimeError(f"evaluated {count} samples, expected {expected}")
    return correct / count


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

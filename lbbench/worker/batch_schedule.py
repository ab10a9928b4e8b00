"""Batch-size schedules (docs/methods.md section 6; Smith et al. 2018), framework-free.

The global batch changes only at epoch boundaries, and only through accum (the number of
virtual workers), so the micro-batch, the BN span and the data order stay defined:
  small_first - epoch 1 runs at ``first_batch`` with the constant LR ``first_lr``; then the
                run's batch and LR schedule (the seed: 512 at LR 0.005, then 8,192 at 0.05).
  increase    - "increase the batch instead of decaying the LR": where the step schedule
                would multiply the LR by decay_factor, B is multiplied by ``factor`` instead
                (capped at ``max_batch``) and the LR keeps its undecayed value.
Steps per epoch follow the epoch's batch: ceil(N / B_e).
"""

from __future__ import annotations

from lbbench.spec import RunSpec, steps_per_epoch
from lbbench.worker.schedules import Schedule


def epoch_batch(spec: RunSpec, epoch: int) -> tuple[int, int]:
    """(global batch, accum) of an epoch (1-based)."""
    bs = spec.batch_schedule
    per_accum = spec.np * spec.local_batch
    if bs is None:
        return spec.global_batch, spec.accum
    if bs.kind == "small_first":
        B = bs.first_batch if epoch == 1 else spec.global_batch
    else:
        drops = sum(1 for m in spec.lr.milestones if epoch - 1 >= m)
        cap = bs.max_batch or spec.data.train_samples
        B = min(round(spec.global_batch * bs.factor**drops), cap)
        B -= B % per_accum
    return B, B // per_accum


def steps_in_epoch(spec: RunSpec, epoch: int) -> int:
    return steps_per_epoch(spec.data.train_samples, epoch_batch(spec, epoch)[0])


def lr_at(spec: RunSpec, sched: Schedule, epoch: int, t_in_epoch: int, global_step: int) -> float:
    """The LR of step t_in_epoch (1-based) of an epoch. Without a batch schedule this is the
    plain schedule at the global step; with one, the schedule is read at the same fraction of
    training (in base-batch steps) and, for 'increase', without its decays."""
    bs = spec.batch_schedule
    if bs is None:
        return sched.lr_at(global_step)
    if bs.kind == "small_first" and epoch == 1:
        return bs.first_lr
    base_step = round((epoch - 1 + t_in_epoch / steps_in_epoch(spec, epoch)) * sched.steps_per_epoch)
    if bs.kind == "increase":
        sched = Schedule(**{**sched.__dict__, "decay_factor": 1.0})
    return sched.lr_at(max(base_step, 1))

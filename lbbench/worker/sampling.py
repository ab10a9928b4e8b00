"""Which samples each virtual worker sees: defined once, independent of np (framework-free).

Epoch e visits a permutation of the training set drawn from (seed, e). Step t of the epoch
takes the next B indices of that permutation; the last step of an epoch wraps around to the
permutation's start so every step has exactly B samples (S = ceil(N / B) steps per epoch, as
in docs/methods.md). The B indices are cut into K = np x accum equal micro-batches; virtual worker
k = rank x accum + a. Hence np=2 x accum=1 and np=1 x accum=2 see identical micro-batches,
which is what makes runs with equal (B, K, BN span) comparable whatever np is.

``train_plan`` / ``eval_plan`` are what a backend's data module asks for; the synthetic-data
seeds are here too, so both backends' synthetic inputs follow one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lbbench.spec import RunSpec, steps_per_epoch
from lbbench.worker.batch_schedule import epoch_batch


@dataclass(frozen=True)
class GlobalBatchSampler:
    n: int
    global_batch: int
    virtual_workers: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n, self.global_batch)

    @property
    def micro_batch(self) -> int:
        return self.global_batch // self.virtual_workers

    def permutation(self, epoch: int) -> NDArray[Any]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def global_indices(self, epoch: int, step: int, perm: NDArray[Any] | None = None) -> NDArray[Any]:
        perm = self.permutation(epoch) if perm is None else perm
        idx = np.arange(step * self.global_batch, (step + 1) * self.global_batch) % self.n
        chosen: NDArray[Any] = perm[idx]
        return chosen

    def micro_indices(self, epoch: int, step: int, k: int, perm: NDArray[Any] | None = None) -> NDArray[Any]:
        m = self.micro_batch
        return self.global_indices(epoch, step, perm)[k * m : (k + 1) * m]

    def stream(self, rank: int, accum: int, epoch: int = 1, step: int = 0) -> Iterator[NDArray[Any]]:
        """This rank's micro-batches in training order, forever, from (epoch, step)."""
        while True:
            perm = self.permutation(epoch)
            for t in range(step, self.steps_per_epoch):
                for a in range(accum):
                    yield self.micro_indices(epoch, t, rank * accum + a, perm)
            epoch, step = epoch + 1, 0


def planned_stream(
    n: int, seed: int, rank: int, np_: int, batch_of: Callable[[int], tuple[int, int]], epoch: int = 1, step: int = 0
) -> Iterator[NDArray[Any]]:
    """Like GlobalBatchSampler.stream, with the global batch of each epoch from ``batch_of(epoch)``
    -> (B, accum) (batch-size schedules); the micro-batch stays B / (np x accum)."""
    while True:
        B, accum = batch_of(epoch)
        s = GlobalBatchSampler(n, B, np_ * accum, seed)
        perm = s.permutation(epoch)
        for t in range(step, s.steps_per_epoch):
            for a in range(accum):
                yield s.micro_indices(epoch, t, rank * accum + a, perm)
        epoch, step = epoch + 1, 0


def eval_shard(n: int, rank: int, size: int, batch: int) -> list[NDArray[Any]]:
    """Rank r evaluates samples r, r+size, ...; every sample is evaluated exactly once."""
    mine = np.arange(rank, n, size)
    return [mine[i : i + batch] for i in range(0, len(mine), batch)]


def train_plan(spec: RunSpec, rank: int, epoch: int = 1, step: int = 0) -> Iterator[NDArray[Any]]:
    """This rank's training micro-batches (sample indices) from (epoch, step) on, each epoch at
    its global batch (lbbench/worker/batch_schedule.py)."""
    return planned_stream(
        spec.data.train_samples, spec.seed, rank, spec.np, lambda e: epoch_batch(spec, e), epoch, step
    )


def epoch_micro_batches(spec: RunSpec, epoch: int) -> int:
    """How many micro-batches one rank draws in an epoch."""
    B, accum = epoch_batch(spec, epoch)
    return steps_per_epoch(spec.data.train_samples, B) * accum


def augment_seed(spec: RunSpec, epoch: int, rank: int) -> int:
    """The seed of an epoch's random augmentation on a rank. Drawn afresh per epoch (not one
    stream over the run) so that a run resumed at an epoch boundary draws the same crops and
    flips as the uninterrupted one."""
    return int(np.random.default_rng([spec.seed, epoch, rank, 0xA06]).integers(2**31 - 1))


def epoch_plans(spec: RunSpec, rank: int, epoch: int) -> Iterator[tuple[int, list[NDArray[Any]]]]:
    """(epoch, that epoch's micro-batches on this rank) from ``epoch`` on: what a per-epoch
    input pipeline reads."""
    stream = train_plan(spec, rank, epoch)
    while True:
        yield epoch, [next(stream) for _ in range(epoch_micro_batches(spec, epoch))]
        epoch += 1


def eval_plan(spec: RunSpec, rank: int, size: int) -> list[NDArray[Any]]:
    return eval_shard(spec.data.eval_samples, rank, size, spec.eval_batch)


def synthetic_train_seed(spec: RunSpec, indices: NDArray[Any]) -> int:
    """Synthetic images of a micro-batch are a function of its first sample index (reproducible)."""
    return int(indices[0]) * 7919 + spec.seed


def synthetic_eval_seed(spec: RunSpec) -> int:
    return 10_000 + spec.seed

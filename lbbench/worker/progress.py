"""What every backend's worker shares (framework-free): the run's position that checkpoints
carry, the step-time decomposition, and the time a restart lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lbbench.store.metrics import read_metrics


@dataclass
class Progress:
    """Everything about a run's position that a checkpoint must carry."""

    epoch: int = 0  # last completed epoch
    step: int = 0
    samples: int = 0
    best: float | None = None  # None until the first evaluation
    reached: dict[str, Any] | None = None
    status: str = "not_reached"
    train_s: float = 0.0
    diverged_reason: str = ""
    parts: dict[str, float] = field(default_factory=dict)  # seconds per part of the step, summed (decomposition)
    elapsed_s: float = 0.0  # active clock since run_start, summed over attempts
    preemptions: int = 0
    time_lost_s: float = 0.0
    backward_passes: int = 0
    allreduces: int = 0
    allreduce_total_s: float = 0.0  # the gradient allreduce's whole span, overlapped part included


PARTS = ("data", "compute", "allreduce", "optimizer", "other", "overhead")


def decomposition(
    times: dict[str, float], step_s: float, epoch_s: float, images: int, comm_total_s: float = 0.0
) -> dict[str, float]:
    """Where an epoch's time went. The loop's timers cover data wait, forward+backward, the
    exposed allreduce (the wait after the backward pass: with the overlapped allreduce the rest
    runs during it) and the optimizer step; ``other`` is the rest of the training steps
    (diagnostics, curvature and extrapolation bookkeeping), ``overhead`` the epoch's time
    outside the steps (LR setting, metrics rows). The parts add up to epoch_s by construction;
    the test checks that the timed ones are most of it. ``allreduce_total_s`` is the
    communication's whole span, hidden part included (not one of the parts)."""
    timed = sum(times.values())
    out = {f"{k}_s": v for k, v in times.items()}
    out.update(
        step_s=step_s,
        other_s=step_s - timed,
        overhead_s=epoch_s - step_s,
        compute_images_per_s=images / max(times.get("compute", 0.0), 1e-9),
        allreduce_total_s=comm_total_s,
    )
    return out


def lost_seconds(run_dir: Path, saved_at: float) -> float:
    """Work done after the checkpoint and thrown away: up to the last metrics row written."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    return max(0.0, rows[-1]["t"] - saved_at) if rows else 0.0

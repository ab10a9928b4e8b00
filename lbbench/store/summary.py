"""summary.json: the typed record of one finished (or failed) run.

The worker's driver writes it when a run ends; the runner writes a short one when a worker
died without writing its own (failed, timeout). status, report, compare, export and baseline
read it through ``read_summary``, which validates it: a summary that cannot be read or does
not fit the schema is *damaged* (``SummaryDamaged`` names the file and the cause), never
half-trusted - the runner re-runs such a cell from its checkpoints and the report lists it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lbbench.store.files import write_json

Status = Literal["success", "not_reached", "diverged", "failed", "timeout"]
# Statuses a re-run does not repeat; "failed" and "timeout" are retried.
DONE_STATUSES = frozenset({"success", "not_reached", "diverged"})


# A worker that fails for a reason it can name prints one line starting with this; the runner
# records that line as the failed run's reason (instead of an exit status).
ERROR_PREFIX = "lbbench: error: "


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the cell: written by every summary, failed ones included
    run_id: str
    suite: str
    status: Status
    method: str
    label: str
    global_batch: int
    framework: str
    np: int
    accum: int
    seed: int
    division: str
    target_top1: float
    wall_s: float
    data_fingerprint: str | None = None  # lbbench/data/layout.py; None for synthetic data
    # a tuning study's trial (lbbench/suite/tuning.py): study, index, sampled values
    study: int | None = None
    trial: int | None = None
    tuned: dict[str, Any] | None = None
    final_of: str | None = None  # a final-seed re-run of the winning trial "study.trial"
    # the result (None until a run has evaluated / reached the target)
    best_top1: float | None = None
    epochs_to_target: int | None = None
    steps_to_target: int | None = None
    samples_to_target: int | None = None
    time_to_target_s: float | None = None
    # MLPerf's clock may not pause: a resumed run's time to target is not valid
    time_to_target_valid: bool | None = None
    # MLPerf's score of one run: run_start to run_stop (None unless it converged)
    time_to_train_s: float | None = None
    # what the run did
    epochs_run: int | None = None
    steps_run: int | None = None
    samples_run: int | None = None
    train_s: float | None = None
    images_per_s: float | None = None
    backward_passes: int | None = None
    allreduces: int | None = None
    preemptions: int | None = None
    time_lost_s: float | None = None
    # what it ran on: accelerators (GPUs; CPU workers count as "CPU" accelerators) and how many
    accelerator: str | None = None
    accelerators: int | None = None
    nodes: int | None = None
    host_cpu: str | None = None  # rank 0's host: CPU model and logical CPUs (MLPerf's system description)
    host_cpus: int | None = None
    # imported from a published MLPerf submission (lbbench/mlperf/importer.py; provenance in
    # the run dir's published.json), not trained by lbbench
    published: bool = False
    # where the time went and the roofline (lbbench/worker/progress.py, roofline.py)
    device: str | None = None
    perf: dict[str, Any] | None = None
    time_parts_s: dict[str, float] | None = None
    # the gradient allreduce's whole span; time_parts_s["allreduce"] is its exposed part
    allreduce_total_s: float | None = None
    compute_images_per_s: float | None = None
    train_gflop_per_image: float | None = None
    achieved_tflops: float | None = None
    peak_tflops: float | None = None
    mfu: float | None = None
    # the data-parallel invariant, recorded rather than assumed
    param_digests: list[str] | None = None
    ranks_agree: bool | None = None
    # why it ended early
    diverged_at_step: int | None = None
    diverged_reason: str | None = None
    reason: str | None = None  # failed / timeout: what the runner saw
    log_tail: list[str] | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / "summary.json", self.model_dump(mode="json"))


class SummaryDamaged(Exception):
    """summary.json exists but cannot be read or does not fit RunSummary."""

    def __init__(self, path: Path, cause: str):
        self.path, self.cause = Path(path), cause
        super().__init__(f"{path}: damaged summary ({cause})")


def read_summary(run_dir: Path) -> RunSummary | None:
    """The run's summary; None when there is none yet; SummaryDamaged when it is unusable."""
    path = Path(run_dir) / "summary.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SummaryDamaged(path, f"unreadable: {e.strerror}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SummaryDamaged(path, f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise SummaryDamaged(path, f"not a JSON object but {type(data).__name__}")
    try:
        return RunSummary.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise SummaryDamaged(
            path, f"{where}: {first['msg']}" + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else "")
        ) from None


def summary_or_damage(run_dir: Path) -> tuple[RunSummary | None, str | None]:
    """(summary, None), (None, None) when absent, or (None, why it is damaged)."""
    try:
        return read_summary(run_dir), None
    except SummaryDamaged as e:
        return None, str(e)


def is_done(run_dir: Path) -> bool:
    s, _ = summary_or_damage(run_dir)
    return s is not None and s.done

"""MLPerf Training's score, computed by MLPerf's own code (framework-free).

A system's score for a benchmark is the olympic mean of its runs' times (run_start to
run_stop, minutes): drop the fastest and the slowest, average the rest. A run that did not
converge (or fails the compliance checker) counts as infinitely slow - it is the one dropped
at the top - and more than one such run (four for unet3d) leaves no score. In the closed
division the mean is then scaled by the RCP normalisation factor (>= 1) when the runs
converged faster than MLPerf's reference convergence points allow.

Everything here calls the installed mlperf-logging package (its result_summarizer's olympic
average, its rcp_checker's normalisation, its benchmark_meta run counts) instead of restating
it, so lbbench's minutes are the official ones to the last digit
(tests/mlperf/test_scoring.py: NVIDIA 8 x H100 13.326, TPU v4-8192 0.19076, tinybox 167.147).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Score:
    minutes: float | None  # MLPerf's score; None when too many runs did not converge
    olympic_minutes: float | None  # before RCP normalisation
    rcp_factor: float  # 1.0 where no normalisation applies
    rcp_verdict: str  # rcp_checker's message ("RCP found", "RCP Interpolation", ...) or why none ran
    runs: int
    converged: int
    required_runs: int  # the round's number of runs per benchmark

    @property
    def note(self) -> str:
        parts = []
        if self.runs < self.required_runs:
            parts.append(f"{self.runs} of the {self.required_runs} runs MLPerf requires")
        if self.minutes is None and self.runs:
            parts.append(f"{self.runs - self.converged} runs did not converge: no MLPerf score")
        return "; ".join(parts)


def max_failures(benchmark: str) -> int:
    """How many non-converged runs a score may absorb (result_summarizer's rule)."""
    return 4 if benchmark == "unet3d" else 1


def required_runs(benchmark: str, usage: str = "training") -> int:
    from mlperf_logging.benchmark_meta import get_result_file_counts

    return int(get_result_file_counts(usage)[benchmark])


def olympic(minutes: Sequence[float | None], benchmark: str = "resnet") -> float | None:
    """MLPerf's olympic mean; ``None`` entries are runs that did not converge (infinite). With
    fewer runs than the round requires there is nothing to drop (compute_score then skips the
    olympic rule): the plain mean, infinite if any run missed."""
    from mlperf_logging.result_summarizer.result_summarizer import _compute_olympic_average

    dropped = sum(m is None for m in minutes)
    if len(minutes) < required_runs(benchmark):
        return None if dropped or not minutes else sum(m for m in minutes if m is not None) / len(minutes)
    if dropped > max_failures(benchmark):
        return None
    avg = _compute_olympic_average(sorted(m for m in minutes if m is not None), dropped, max_failures(benchmark))
    return None if avg is None else float(avg)


def rcp_normalisation(result_files: Sequence[Path], ruleset: str, usage: str = "training") -> tuple[float, str]:
    """(factor, verdict) of MLPerf's RCP check on a system's result files. The checker writes
    its factor into the folder it checks, so it runs on copies in a temporary folder."""
    from mlperf_logging.rcp_checker import rcp_checker

    with tempfile.TemporaryDirectory(prefix="lbbench-rcp-") as tmp:
        folder = Path(tmp) / "resnet"
        folder.mkdir()
        for i, f in enumerate(result_files):
            shutil.copyfile(f, folder / f"result_{i}.txt")
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                _, verdict, _ = rcp_checker.check_directory(
                    str(folder),
                    usage,
                    ruleset,
                    False,
                    False,
                    rcp_file=None,
                    rcp_pass="pruned_rcps",
                    rcp_bypass=False,
                    set_scaling=True,
                )
            except Exception as e:  # the checker has no record for this ruleset/benchmark
                return 1.0, f"no RCP check ({type(e).__name__}: {e})"
        scaling = folder / "scaling.json"
        factor = float(json.loads(scaling.read_text())["scaling_factor"]) if scaling.exists() else 1.0
    return factor, str(verdict)


def score(
    minutes: Sequence[float | None], benchmark: str = "resnet", rcp: tuple[float, str] = (1.0, "not checked")
) -> Score:
    """The score of a set of runs given each run's minutes (None: did not converge)."""
    mean = olympic(minutes, benchmark)
    factor, verdict = rcp
    return Score(
        minutes=None if mean is None else mean * factor,
        olympic_minutes=mean,
        rcp_factor=factor,
        rcp_verdict=verdict,
        runs=len(minutes),
        converged=sum(m is not None for m in minutes),
        required_runs=required_runs(benchmark),
    )

"""`lbbench bench loop`: lbbench's training loop against the plainest loop of the same framework
on the same network, batch and threads (each backend's ``bench.py bare``), one process each,
alternating in rounds so that a noisy moment hits both; the ratio of their images/s per round
and its median. lbbench's side is `bench throughput` at np = 1 on synthetic data: Horovod
initialised, the data loader, the method's step and the step-time timers included."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lbbench.bench.throughput import BenchFailed, sweep
from lbbench.spec import PerfSpec


def _bare(framework: str, model: str, batch: int, warmup: int, iters: int, per_iter: int) -> dict[str, Any]:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bare.json"
        cmd = [sys.executable, "-m", f"lbbench.backends.{framework}.bench", "bare", "--model", model]
        cmd += ["--batch", str(batch), "--warmup", str(warmup), "--iters", str(iters)]
        cmd += ["--batches-per-iter", str(per_iter), "--out", str(out)]
        rc = subprocess.call(cmd)
        if rc != 0 or not out.exists():
            raise BenchFailed(f"the bare {framework} loop failed (exit {rc})")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def compare(
    frameworks: list[str], model: str, batch: int, rounds: int, warmup: int, iters: int, per_iter: int
) -> dict[str, Any]:
    out: dict[str, Any] = dict(benchmark="loop", model=model, batch=batch, rounds=rounds, frameworks={})
    for fw in frameworks:
        out["frameworks"][fw] = dict(bare=[], lbbench=[], ratio=[])
    for _ in range(rounds):
        for fw in frameworks:
            row = out["frameworks"][fw]
            bare = _bare(fw, model, batch, warmup, iters, per_iter)["images_per_s"]
            ours = sweep(fw, model, batch, [1], PerfSpec(), None, warmup, iters, per_iter)["runs"][0]["images_per_s"]
            row["bare"].append(bare)
            row["lbbench"].append(ours)
            row["ratio"].append(ours / bare)
    for row in out["frameworks"].values():
        row["median_ratio"] = statistics.median(row["ratio"])
    return out

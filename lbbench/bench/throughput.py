"""`lbbench bench throughput`: one benchmark process group per np (the backend's bench.py under
the local Gloo launcher), and the scaling efficiency across np - per-worker throughput
relative to the first np, weak scaling at a fixed batch per worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lbbench.spec import PerfSpec


class BenchFailed(Exception):
    pass


def sweep(
    framework: str,
    model: str,
    batch: int,
    nps: list[int],
    perf: PerfSpec,
    data_dir: Path | None,
    warmup: int,
    iters: int,
    per_iter: int,
) -> dict[str, Any]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in nps:
            part = Path(tmp) / f"np{n}.json"
            cmd = [
                sys.executable,
                "-m",
                "lbbench.launch.gloo_local",
                str(n),
                sys.executable,
                "-m",
                f"lbbench.backends.{framework}.bench",
                "throughput",
                "--model",
                model,
                "--batch",
                str(batch),
                "--warmup",
                str(warmup),
                "--iters",
                str(iters),
                "--batches-per-iter",
                str(per_iter),
                "--perf",
                perf.model_dump_json(),
                "--out",
                str(part),
            ] + (["--data-dir", str(data_dir)] if data_dir else [])
            env = dict(os.environ)
            if perf.fusion_threshold_mb:  # as a run's launch sets it (lbbench/launch/commands.py)
                env["HOROVOD_FUSION_THRESHOLD"] = str(perf.fusion_threshold_mb * 2**20)
            rc = subprocess.call(cmd, env=env)
            if rc != 0 or not part.exists():
                raise BenchFailed(f"the np={n} benchmark failed (exit {rc})")
            runs.append(json.loads(part.read_text()))
    base = runs[0]
    for r in runs:
        r["scaling_efficiency"] = (r["images_per_s"] / r["np"]) / (base["images_per_s"] / base["np"])
    return dict(
        benchmark="throughput",
        framework=framework,
        model=model,
        batch_per_worker=batch,
        data="dali" if data_dir else "synthetic",
        runs=runs,
    )

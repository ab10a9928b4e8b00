"""Running real workers from tests: a RunSpec in a run dir, launched like `lbbench run` does."""
from __future__ import annotations

import subprocess
from pathlib import Path

from lbbench import launch
from lbbench.spec import RunSpec
from lbbench.store import read_summary
from lbbench.suite import expand, load_suite


def spec_from(suite_text: str, tmp: Path, **override) -> RunSpec:
    path = tmp / "suite.yaml"
    path.write_text(suite_text)
    runs, _ = expand(load_suite(path), check_data=True)
    return runs[0].model_copy(update=override).with_id() if override else runs[0]


def run_worker(spec: RunSpec, rdir: Path, launcher: str = "local", timeout: float = 600) -> dict:
    rdir.mkdir(parents=True, exist_ok=True)
    spec.save(rdir / "run.yaml")
    p = subprocess.run(launch.command(launcher, spec, rdir), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    summary = read_summary(rdir)
    assert summary is not None, p.stdout[-4000:]
    return summary

"""What many tests share: the `lbbench` command, suites in temporary files, and real workers
run from a RunSpec in a run dir, launched like `lbbench run` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lbbench.launch import commands as launch
from lbbench.spec import RunSpec
from lbbench.store.summary import RunSummary, read_summary
from lbbench.suite import expand, load_suite

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Real result directories of a `lbbench run` of tests/golden/golden.yaml (see tests/report/test_report.py)
GOLDEN = ROOT / "tests" / "golden"
RESULTS = GOLDEN / "results" / "golden"


def lbbench(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lbbench"), *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        timeout=timeout,
    )


def mlperf_check(mllog: Path | str) -> subprocess.CompletedProcess[str]:
    """MLPerf's compliance checker (training, ruleset 4.0.0) on the log. It runs in a temporary
    folder: the checker writes its own log files into its working directory."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return subprocess.run(
            [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training"]
            + ["--ruleset", "4.0.0", str(mllog)],
            capture_output=True,
            text=True,
            cwd=tmp,
        )


def gloo_script(n: int, script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python tests/SCRIPT ARGS`` as n Horovod ranks under lbbench's own Gloo launcher."""
    cmd = [sys.executable, "-m", "lbbench.launch.gloo_local", str(n), sys.executable, str(ROOT / "tests" / script)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def assert_mlperf_compliant(mllog: Path | str) -> None:
    """MLPerf's compliance checker passes the log."""
    p = mlperf_check(mllog)
    assert p.returncode == 0, (p.stdout + p.stderr)[-2000:]


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def spec_from(suite_text: str, tmp: Path, **override) -> RunSpec:
    path = tmp / "suite.yaml"
    path.write_text(suite_text)
    runs, _ = expand(load_suite(path), check_data=True)
    return runs[0].model_copy(update=override).with_id() if override else runs[0]


def run_worker(spec: RunSpec, rdir: Path, launcher: str = "local", timeout: float = 600) -> RunSummary:
    rdir.mkdir(parents=True, exist_ok=True)
    spec.save(rdir / "run.yaml")
    p = subprocess.run(launch.command(launcher, spec, rdir), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    summary = read_summary(rdir)
    assert summary is not None, p.stdout[-4000:]
    return summary


def run_single(spec: RunSpec, rdir: Path, timeout: float = 600) -> RunSummary:
    """np=1 without a launcher: Horovod initialises a world of one."""
    assert spec.np == 1
    rdir.mkdir(parents=True, exist_ok=True)
    spec.save(rdir / "run.yaml")
    p = subprocess.run(
        [sys.executable, "-m", f"lbbench.backends.{spec.framework}.train", str(rdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    summary = read_summary(rdir)
    assert summary is not None
    return summary


SMALL_SUITE = """
name: small
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 1, target_top1: 0.99}}
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix:
  methods: [{{name: {method}, hparams: {hparams}}}]
  global_batch: [256]
  workers: [{np}]
  accum: {accum}
run: {{perf: {{precision: {precision}}}}}
"""


def small_spec(
    tmp: Path, data: Path, method: str, hparams: str = "{}", np: int = 1, accum: int = 2, precision: str = "float64"
) -> RunSpec:
    """One epoch of the digits data at batch 256 (6 steps). float64 by default: the equivalence
    tests compare runs whose sums differ only in order, and in float64 a real difference
    (>= 1e-6) stands out from rounding (~1e-13) on any CPU; in float32 the CPU's kernels (oneDNN
    chooses them by instruction set) decide the last bits, which adaptive methods amplify."""
    text = SMALL_SUITE.format(data=data, method=method, hparams=hparams, np=np, accum=accum, precision=precision)
    return spec_from(text, tmp)


def final_weights(rdir: Path) -> dict:
    import torch

    w = torch.load(rdir / "final.pt")
    return {k: v for k, v in w.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def fake_summary(spec: RunSpec, results: Path, steps: int | None = None, **fields) -> Path:
    """A hand-made summary.json for ``spec`` under RESULTS/SUITE/RUN_ID (no training): the cell
    from the spec (the runner's own failed_summary), reaching the target in ``steps`` (None:
    not reached), best top-1 0.5 unless ``fields`` say otherwise."""
    from lbbench.launch.runner import failed_summary

    d = Path(results) / spec.suite / spec.run_id
    d.mkdir(parents=True, exist_ok=True)
    status = "success" if steps else "not_reached"
    summary = failed_summary(spec, "failed", "", [], 1.0).model_copy(
        update=dict(status=status, reason=None, log_tail=[], steps_to_target=steps, best_top1=0.5) | fields
    )
    summary.write(d)
    return d


FAKE_SWEEP = """\
name: sweep
workload:
  name: digits
  data: {kind: synthetic, train_samples: 2048, eval_samples: 64}
  target_top1: 0.9
  max_epochs: 1
lr: {base_lr: 0.1}
matrix:
  methods: [{name: sgd}]
  global_batch: [64, 256, 1024]
"""


def write_fake_sweep(tmp: Path) -> Path:
    """A results directory of a batch sweep with hand-made summaries (no training): sgd at 64,
    256 and 1,024 reaching the target in 100 (1 + 256 / B) steps, rounded, at 10 ms per 64
    images, with a time decomposition whose allreduce share grows with the batch."""
    from lbbench.suite import expand, load_suite

    for spec in expand(load_suite(write_suite(tmp / "sweep.yaml", FAKE_SWEEP)))[0]:
        steps = round(100 * (1 + 256 / spec.global_batch))
        k = spec.global_batch / 64
        parts = dict(data=1.0, compute=6.0 * k, allreduce=0.5 * k, optimizer=0.5, other=0.2, overhead=0.3, eval=0.5)
        d = fake_summary(
            spec,
            tmp,
            steps,
            epochs_to_target=1,
            samples_to_target=steps * spec.global_batch,
            best_top1=0.95,
            time_to_target_s=steps * 0.01 * k,
            time_to_target_valid=True,
            time_parts_s=parts,
        )
        spec.save(d / "run.yaml")
    return tmp / "sweep"

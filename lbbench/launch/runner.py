"""`lbbench run`: every cell of a suite through its launcher, with live progress.

Completed runs (summary.json with a final status) are skipped; a per-run lock keeps two
`lbbench run` processes on one results directory from running the same cell; a worker that
dies without a summary gets a `failed` summary with the reason and the log tail.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import time
from pathlib import Path

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lbbench.launch import commands as launch
from lbbench.spec import RunSpec
from lbbench.store.files import run_dir
from lbbench.store.metrics import read_metrics
from lbbench.store.summary import RunSummary, Status, is_done, summary_or_damage

PARTIAL_FILES = ("metrics.jsonl", "mllog.txt", "summary.json", "worker.log")


def select(runs: list[RunSpec], only: str | None) -> list[RunSpec]:
    if not only:
        return runs
    return [
        r
        for r in runs
        if fnmatch.fnmatch(r.run_id, only) or fnmatch.fnmatch(r.label, only) or fnmatch.fnmatch(r.run_id, f"*{only}*")
    ]


def run_all(
    runs: list[RunSpec],
    results: Path,
    launcher: str,
    console: Console | None = None,
    timeout_s: float | None = None,
    opts: launch.LaunchOptions | None = None,
) -> list[RunSummary]:
    console = console or Console()
    summaries = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for k, spec in enumerate(runs, 1):
            rdir = run_dir(results, spec.suite, spec.run_id)
            head = f"run {k}/{len(runs)} {spec.run_id}"
            done, damage = summary_or_damage(rdir)
            if done and done.done:
                progress.console.print(f"[dim]{head}: done before, skipped[/dim]")
                summaries.append(done)
                continue
            if damage:
                progress.console.print(f"[yellow]{head}: {damage}; running it again[/yellow]")
            rdir.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(rdir / ".lock"), timeout=0):
                    done, _ = summary_or_damage(rdir)
                    if done and done.done:  # finished by another process while we waited
                        summaries.append(done)
                        continue
                    summaries.append(_run_one(spec, rdir, launcher, progress, head, timeout_s, opts))
            except Timeout:
                progress.console.print(f"[yellow]{head}: running in another lbbench process, skipped[/yellow]")
    return summaries


def run_state(rdir: Path, spec: RunSpec) -> str:
    """done | running | resumable | failed | damaged | not started (from files and locks)."""
    if is_done(rdir):
        return "done"
    if rdir.exists():
        try:
            with FileLock(str(rdir / ".lock"), timeout=0):
                pass
        except Timeout:
            return "running"
    if resumable(rdir, spec):
        return "resumable"
    summary, damage = summary_or_damage(rdir)
    if damage:
        return "damaged"
    if summary and summary.status in ("failed", "timeout"):
        return "failed"
    return "not started"


def resumable(rdir: Path, spec: RunSpec | None = None) -> bool:
    """A checkpoint of the same RunSpec is there: the worker will resume from it."""
    if not any((rdir / "ckpt").glob("epoch-*.p*")) or not (rdir / "run.yaml").exists():
        return False
    return spec is None or RunSpec.load(rdir / "run.yaml").identity() == spec.identity()


def _run_one(
    spec: RunSpec,
    rdir: Path,
    launcher: str,
    progress: Progress,
    head: str,
    timeout_s: float | None,
    opts: launch.LaunchOptions | None = None,
) -> RunSummary:
    resume = resumable(rdir, spec)
    if resume:  # keep the logs and the checkpoint; the failed attempt's summary goes
        (rdir / "summary.json").unlink(missing_ok=True)
        progress.console.print(f"[cyan]{head}: resuming from its checkpoint[/cyan]")
    else:  # a fresh attempt; nothing partial is ever read as a result
        for name in PARTIAL_FILES:
            (rdir / name).unlink(missing_ok=True)
        shutil.rmtree(rdir / "ckpt", ignore_errors=True)
    spec.save(rdir / "run.yaml")
    cmd = launch.command(launcher, spec, rdir, opts)
    task = progress.add_task(head, total=spec.max_epochs, info="starting")
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.worker_env(spec)}
    with open(rdir / "worker.log", "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        reason = None
        while proc.poll() is None:
            _show(progress, task, rdir)
            if timeout_s and time.time() - t0 > timeout_s:
                reason = f"timeout after {timeout_s:.0f} s"
                _kill(proc)
                break
            time.sleep(0.5)
        rc = proc.wait()
    _show(progress, task, rdir)
    summary, damage = summary_or_damage(rdir)
    if summary is None or rc != 0:
        tail = (rdir / "worker.log").read_text(errors="replace").splitlines()[-30:]
        why = reason or f"worker exited with status {rc}" + (f" ({damage})" if damage else "")
        summary = failed_summary(spec, "timeout" if reason else "failed", why, tail, time.time() - t0)
        summary.write(rdir)
    style = {"success": "green", "not_reached": "yellow"}.get(summary.status, "red")
    best = summary.best_top1
    progress.update(
        task, info=f"[{style}]{summary.status}[/{style}]" + (f" best top-1 {best:.3f}" if best is not None else "")
    )
    if summary.status in ("failed", "timeout"):
        progress.console.print(f"[red]{head}: {summary.reason}; log: {rdir / 'worker.log'}[/red]")
    return summary


def failed_summary(spec: RunSpec, status: Status, reason: str, log_tail: list[str], wall_s: float) -> RunSummary:
    """What the runner records when a worker ended without a summary of its own."""
    return RunSummary(
        run_id=spec.run_id,
        suite=spec.suite,
        status=status,
        method=spec.method,
        label=spec.label,
        global_batch=spec.global_batch,
        framework=spec.framework,
        np=spec.np,
        accum=spec.accum,
        seed=spec.seed,
        division=spec.division,
        target_top1=spec.target_top1,
        reason=reason,
        log_tail=log_tail,
        wall_s=wall_s,
    )


def _show(progress: Progress, task: TaskID, rdir: Path) -> None:
    rows = read_metrics(rdir / "metrics.jsonl")
    epochs = [r for r in rows if r["kind"] == "epoch"]
    steps = [r for r in rows if r["kind"] == "step"]
    info = []
    if steps:
        info.append(f"epoch {steps[-1]['epoch']} loss {steps[-1]['loss']:.3f}")
    tops = [r["top1"] for r in epochs if r.get("top1") is not None]
    if tops:
        info.append(f"top-1 {tops[-1]:.3f}")
    progress.update(task, completed=len(epochs), info=" ".join(info) or "starting")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

"""`lbbench run`: every cell of a suite through its launcher, with live progress.

- Completed runs (a valid summary with a final status) are skipped.
- Two locks keep a cell from ever training twice: the runner holds ``.lock`` while its launcher
  runs, and the worker's rank 0 holds ``.train.lock`` while it trains (lbbench/worker/driver.py).
  A second `lbbench run` skips a cell while either is held - also after the first runner was
  killed while its workers still train; `lbbench status` says "running" for it.
- A failed or interrupted run resumes from its newest verified checkpoint; without one, the
  earlier attempt's files move to ``attempts/N/`` and the run starts again, never appending
  to old logs.
- SIGTERM, SIGINT and SIGHUP stop the current cell's launcher and workers (SIGTERM to their
  process group, then SIGKILL after a grace period), leave the run resumable, and end
  `lbbench run` with 128 + the signal's number.
- A worker that dies without a summary gets a ``failed`` summary with the reason (a signal by
  its name) and the log tail.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from lbbench.launch import commands as launch
from lbbench.spec import RunSpec
from lbbench.store.files import run_dir
from lbbench.store.metrics import read_metrics
from lbbench.store.summary import ERROR_PREFIX, RunSummary, Status, is_done, summary_or_damage
from lbbench.worker import checkpoints

# What an attempt leaves in its run directory (moved aside, never deleted, when a run restarts)
ATTEMPT_FILES = (
    "mllog.txt",
    "metrics.jsonl",
    "summary.json",
    "worker.log",
    "final.pt",
    "final.npz",
    "kfac_factors.pt",
    "ckpt",
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = float(os.environ.get("LBBENCH_STOP_GRACE_S", "30"))


class Stopped(Exception):
    """`lbbench run` was told to stop (SIGTERM, SIGINT, SIGHUP); the cell is left resumable."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


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
    """Runs the cells in order; raises Stopped (after stopping the current cell) on a signal."""
    console = console or Console()
    summaries = []
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            for k, spec in enumerate(runs, 1):
                if stop:
                    raise Stopped(stop[0])
                summary = _cell(
                    spec,
                    run_dir(results, spec.suite, spec.run_id),
                    launcher,
                    progress,
                    f"run {k}/{len(runs)} {spec.run_id}",
                    timeout_s,
                    opts,
                    stop,
                )
                if summary is not None:
                    summaries.append(summary)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return summaries


def _cell(
    spec: RunSpec,
    rdir: Path,
    launcher: str,
    progress: Progress,
    head: str,
    timeout_s: float | None,
    opts: launch.LaunchOptions | None,
    stop: list[int],
) -> RunSummary | None:
    done, damage = summary_or_damage(rdir)
    if done and done.done:
        progress.console.print(f"[dim]{head}: done before, skipped[/dim]")
        return done
    if damage:
        progress.console.print(f"[yellow]{head}: {damage}; running it again[/yellow]")
    rdir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(rdir / ".lock"), timeout=0):
            if training_elsewhere(rdir):
                progress.console.print(f"[yellow]{head}: {training_elsewhere(rdir)}; skipped[/yellow]")
                return None
            done, _ = summary_or_damage(rdir)
            if done and done.done:  # finished by another process while we waited
                return done
            return _run_one(spec, rdir, launcher, progress, head, timeout_s, opts, stop)
    except Timeout:
        progress.console.print(f"[yellow]{head}: running in another lbbench process, skipped[/yellow]")
        return None


def training_elsewhere(rdir: Path) -> str | None:
    """Why the cell's workers are still training (its training lock is held), or None."""
    lock = rdir / ".train.lock"
    if not lock.exists():
        return None
    try:
        with FileLock(str(lock), timeout=0):
            return None
    except Timeout:
        who = (rdir / ".train.owner").read_text().strip() if (rdir / ".train.owner").exists() else "a worker"
        return f"still training ({who})"


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
        if training_elsewhere(rdir):
            return "running"
    if resumable(rdir, spec):
        return "resumable"
    summary, damage = summary_or_damage(rdir)
    if damage:
        return "damaged"
    if summary and summary.status in ("failed", "timeout"):
        return "failed"
    return "not started"


def describe(rdir: Path, spec: RunSpec) -> str:
    """What `lbbench run` will do with a cell that is not done, in words (for `lbbench status`)."""
    bad = [p.name for p in checkpoints.damaged(rdir)]
    note = f"damaged checkpoint(s) {', '.join(bad)} will not be used; " if bad else ""
    if resumable(rdir, spec):
        return note + f"resumes after epoch {checkpoints.usable(rdir)[0][0]}"
    leftovers = [n for n in ATTEMPT_FILES if (rdir / n).exists()]
    if leftovers:
        return note + f"restarts from epoch 1; the earlier attempt's {', '.join(leftovers)} move to attempts/"
    return note.rstrip("; ")


def resumable(rdir: Path, spec: RunSpec | None = None) -> bool:
    """A usable checkpoint of the same RunSpec is there: the worker will resume from it."""
    if not checkpoints.usable(rdir) or not (rdir / "run.yaml").exists():
        return False
    try:
        return spec is None or RunSpec.load(rdir / "run.yaml").identity() == spec.identity()
    except Exception:  # an unreadable run.yaml is not this RunSpec's
        return False


def set_attempt_aside(rdir: Path, names: tuple[str, ...]) -> Path | None:
    """Moves the named files of an earlier attempt into attempts/N/ (N = the next free number)."""
    present = [n for n in names if (rdir / n).exists()]
    if not present:
        return None
    n = 1 + max((int(p.name) for p in (rdir / "attempts").glob("*") if p.name.isdigit()), default=0)
    dest = rdir / "attempts" / str(n)
    dest.mkdir(parents=True)
    for name in present:
        shutil.move(str(rdir / name), str(dest / name))
    return dest


def _run_one(
    spec: RunSpec,
    rdir: Path,
    launcher: str,
    progress: Progress,
    head: str,
    timeout_s: float | None,
    opts: launch.LaunchOptions | None,
    stop: list[int],
) -> RunSummary:
    if resumable(rdir, spec):  # keep the logs and the checkpoints; the failed attempt's summary is set aside
        set_attempt_aside(rdir, ("summary.json",))
        progress.console.print(
            f"[cyan]{head}: resuming from its checkpoint (after epoch {checkpoints.usable(rdir)[0][0]})[/cyan]"
        )
    elif moved := set_attempt_aside(rdir, ATTEMPT_FILES):  # a fresh attempt: nothing partial is read or extended
        progress.console.print(
            f"[cyan]{head}: no usable checkpoint; starting again, the earlier attempt is in {moved}[/cyan]"
        )
    spec.save(rdir / "run.yaml")
    cmd = launch.command(launcher, spec, rdir, opts)
    task = progress.add_task(head, total=spec.max_epochs, info="starting")
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.worker_env(spec, opts)}
    reason = None
    with open(rdir / "worker.log", "a") as out:
        log_start = out.tell()  # this attempt's part of the log
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # Its own process group, so that stopping reaches the launcher and every worker it started.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while True:
            try:
                rc = proc.wait(timeout=1.0)  # returns as soon as the launcher exits
                break
            except subprocess.TimeoutExpired:
                _show(progress, task, rdir)
            if stop:
                _stop(proc)
                progress.update(task, info=f"[yellow]stopped by {signal.Signals(stop[0]).name}; resumable[/yellow]")
                raise Stopped(stop[0])
            if timeout_s and time.time() - t0 > timeout_s:
                reason = f"timeout after {timeout_s:.0f} s"
                rc = _stop(proc)
                break
    _show(progress, task, rdir)
    summary, damage = summary_or_damage(rdir)
    if rc != 0 and reason is None and _stopped_meanwhile(stop):
        # scancel (and a batch system's preemption) signals the launcher and this process at
        # once: the launcher's death is the stop's doing, not a failure of the run.
        progress.update(task, info=f"[yellow]stopped by {signal.Signals(stop[0]).name}; resumable[/yellow]")
        raise Stopped(stop[0])
    if summary is None or rc != 0:
        with open(rdir / "worker.log", errors="replace") as f:
            f.seek(log_start)
            lines = f.read().splitlines()
        tail = lines[-30:]
        why = reason or named_error(lines) or exit_reason(rc) + (f" ({damage})" if damage else "")
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


def named_error(lines: list[str]) -> str | None:
    """The first reason a worker named itself (a line with ERROR_PREFIX, maybe behind the
    launcher's "[rank]<stderr>:" prefix), e.g. the damaged image a decoder failed on."""
    for line in lines:
        if ERROR_PREFIX in line:
            return line.split(ERROR_PREFIX, 1)[1].strip()
    return None


def exit_reason(rc: int) -> str:
    """A launcher's exit status in words: by its signal's name when a signal ended a process
    (Popen: -N; shells and launchers: 128 + N; MPI launchers pass a rank's -N on as 256 - N,
    e.g. 245 for SIGSEGV)."""
    for n in (-rc, rc - 128 if rc <= 128 + 64 else 256 - rc):
        if n > 0:
            try:
                name = signal.Signals(n).name
            except ValueError:
                continue
            hint = SIGNAL_HINTS.get(name, "")
            return f"worker exited with status {rc} (killed by {name}{hint})"
    return f"worker exited with status {rc}"


SIGNAL_HINTS = {
    "SIGSEGV": "; a crash in native code - a damaged image can cause it: `lbbench data check DIR`",
    "SIGKILL": "; by the out-of-memory killer, a scheduler or a user",
}


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
        study=spec.study,
        trial=spec.trial,
        tuned=spec.tuned,
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


def _stopped_meanwhile(stop: list[int], within_s: float = 2.0) -> bool:
    """Whether a stop signal arrived, or arrives within ``within_s`` of the launcher's exit."""
    deadline = time.time() + within_s
    while not stop and time.time() < deadline:
        time.sleep(0.05)
    return bool(stop)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the launcher's process group (the launcher and its workers), SIGKILL after
    the grace period; returns the exit status."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()

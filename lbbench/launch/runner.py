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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

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
    """The runs matching ``only``: glob patterns on the run id or label, comma-separated."""
    if not only:
        return runs
    pats = [p.strip() for p in only.split(",") if p.strip()]
    return [
        r
        for r in runs
        if any(
            fnmatch.fnmatch(r.run_id, p) or fnmatch.fnmatch(r.label, p) or fnmatch.fnmatch(r.run_id, f"*{p}*")
            for p in pats
        )
    ]


def run_all(
    runs: list[RunSpec],
    results: Path,
    launcher: str,
    console: Console | None = None,
    timeout_s: float | None = None,
    opts: launch.LaunchOptions | None = None,
    warm: bool = True,
) -> list[RunSummary]:
    """Runs the cells in order; raises Stopped (after stopping the current cell) on a signal.
    ``warm``: consecutive cells with the same np and framework share one launch of workers."""
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
            for held in _launch_groups(runs, warm):
                if stop:
                    raise Stopped(stop[0])
                if len(held) == 1:
                    n, spec = held[0]
                    rdir = run_dir(results, spec.suite, spec.run_id)
                    head = f"run {n}/{len(runs)} {spec.run_id}"
                    summary = _cell(spec, rdir, launcher, progress, head, timeout_s, opts, stop)
                    if summary is not None:
                        summaries.append(summary)
                    continue
                summaries += _warm_group(held, len(runs), results, launcher, progress, timeout_s, opts, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return summaries


def _launch_groups(runs: list[RunSpec], warm: bool) -> list[list[tuple[int, RunSpec]]]:
    """(number, run) groups that share one launch: with ``warm``, every run of the same np and
    framework (in suite order, groups in the order they first appear); else one run each."""
    if not warm:
        return [[(k, r)] for k, r in enumerate(runs, 1)]
    groups: dict[tuple[int, str], list[tuple[int, RunSpec]]] = {}
    for k, r in enumerate(runs, 1):
        groups.setdefault((r.np, r.framework), []).append((k, r))
    return list(groups.values())


def _warm_group(
    group: list[tuple[int, RunSpec]],
    total: int,
    results: Path,
    launcher: str,
    progress: Progress,
    timeout_s: float | None,
    opts: launch.LaunchOptions | None,
    stop: list[int],
) -> list[RunSummary]:
    """Cells that share a launch: done ones skipped, the rest locked and trained in warm
    launches - again for the cells after a failed one, until every cell has a summary."""
    out: list[RunSummary] = []
    queue = group
    while queue:
        if stop:
            raise Stopped(stop[0])
        locks: list[FileLock] = []
        held: list[_Held] = []
        try:
            for k, spec in queue:
                rdir = run_dir(results, spec.suite, spec.run_id)
                head = f"run {k}/{total} {spec.run_id}"
                ready = _lock_cell(spec, rdir, progress, head, locks)
                if isinstance(ready, RunSummary):
                    out.append(ready)
                elif ready:
                    held.append(_Held(k, spec, rdir, head))
            queue = []
            if len(held) == 1:
                h = held[0]
                out.append(_run_one(h.spec, h.rdir, launcher, progress, h.head, timeout_s, opts, stop))
            elif held:
                finished, left = _run_warm(held, launcher, progress, timeout_s, opts, stop)
                out += finished
                queue = [(c.k, c.spec) for c in left]
        finally:
            for lock in locks:
                lock.release()
    return out


def _lock_cell(spec: RunSpec, rdir: Path, progress: Progress, head: str, locks: list[FileLock]) -> RunSummary | bool:
    """A done cell's summary; True when the cell is now locked for this runner (its lock added
    to ``locks``); False when another process has it."""
    done, damage = summary_or_damage(rdir)
    if done and done.done:
        progress.console.print(f"[dim]{head}: done before, skipped[/dim]")
        return done
    if damage:
        progress.console.print(f"[yellow]{head}: {damage}; running it again[/yellow]")
    rdir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(rdir / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        progress.console.print(f"[yellow]{head}: running in another lbbench process, skipped[/yellow]")
        return False
    locks.append(lock)
    if why := training_elsewhere(rdir):
        progress.console.print(f"[yellow]{head}: {why}; skipped[/yellow]")
        return False
    done, _ = summary_or_damage(rdir)
    if done and done.done:  # finished by another process while we waited
        return done
    return True


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


def _prepare(spec: RunSpec, rdir: Path, progress: Progress, head: str) -> tuple[TaskID, int]:
    """Resume or set the earlier attempt aside, write run.yaml; (progress task, the log's
    length before this attempt)."""
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
    log = rdir / "worker.log"
    return progress.add_task(head, total=spec.max_epochs, info="starting"), log.stat().st_size if log.exists() else 0


def _launch(cmd: list[str], env: dict[str, str], out: IO[str]) -> subprocess.Popen[bytes]:
    out.write("$ " + " ".join(cmd) + "\n")
    out.flush()
    # Its own process group, so that stopping reaches the launcher and every worker it started.
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


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
    task, log_start = _prepare(spec, rdir, progress, head)
    cmd = launch.command(launcher, spec, rdir, opts)
    t0 = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.worker_env(spec, opts)}
    reason = None
    with open(rdir / "worker.log", "a") as out:
        proc = _launch(cmd, env, out)
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
    return _finish(spec, rdir, progress, head, task, rc, reason, log_start, t0, stop, [])


def _finish(
    spec: RunSpec,
    rdir: Path,
    progress: Progress,
    head: str,
    task: TaskID,
    rc: int,
    reason: str | None,
    log_start: int,
    t0: float,
    stop: list[int],
    launcher_lines: list[str],
) -> RunSummary:
    """The cell's summary: the worker's own, or - when it ended without one - a failed (or
    timeout) summary with the reason the log names, else the exit status in words."""
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
        if launcher_lines:  # a warm launch: what the launcher said goes into the cell's log too
            with open(rdir / "worker.log", "a") as f:
                f.write("".join(f"{ln}\n" for ln in ["# the warm launch's own output:", *launcher_lines]))
            lines += launcher_lines
        tail = lines[-30:]
        why = reason or named_error(lines) or exit_reason(rc) + (f" ({damage})" if damage else "")
        summary = failed_summary(spec, "timeout" if reason else "failed", why, tail, time.time() - t0)
        summary.write(rdir)
    _done(progress, task, head, rdir, summary)
    return summary


def _done(progress: Progress, task: TaskID, head: str, rdir: Path, summary: RunSummary) -> None:
    style = {"success": "green", "not_reached": "yellow"}.get(summary.status, "red")
    best = summary.best_top1
    progress.update(
        task, info=f"[{style}]{summary.status}[/{style}]" + (f" best top-1 {best:.3f}" if best is not None else "")
    )
    if summary.status in ("failed", "timeout"):
        progress.console.print(f"[red]{head}: {summary.reason}; log: {rdir / 'worker.log'}[/red]")


@dataclass
class _Held:
    """A cell of a warm launch: locked and prepared by the runner."""

    k: int
    spec: RunSpec
    rdir: Path
    head: str
    task: TaskID | None = None
    log_start: int = 0


def _run_warm(
    cells: list[_Held],
    launcher: str,
    progress: Progress,
    timeout_s: float | None,
    opts: launch.LaunchOptions | None,
    stop: list[int],
) -> tuple[list[RunSummary], list[_Held]]:
    """One launch that trains ``cells`` in turn (lbbench/worker/pool.py). Returns the summaries of
    the cells it finished or failed, and the cells it never reached (the launch ended in an
    earlier one's failure or timeout): the caller launches those again."""
    for c in cells:
        c.task, c.log_start = _prepare(c.spec, c.rdir, progress, c.head)
        progress.update(c.task, info="queued (warm launch)")
    first = cells[0]
    cmd = launch.command(launcher, first.spec, first.rdir, opts, [c.rdir for c in cells[1:]])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **launch.worker_env(first.spec, opts)}
    for c in cells:  # each cell's log names the command that trained it
        with open(c.rdir / "worker.log", "a") as f:
            f.write("$ " + " ".join(cmd) + f"   (warm launch: cell {cells.index(c) + 1} of {len(cells)})\n")
    launch_log = first.rdir.parent / "warm-launches.log"
    done: list[RunSummary] = []
    reason = None
    i, t_cell = 0, time.time()

    def advance() -> None:
        nonlocal i, t_cell
        while i < len(cells) and summary_or_damage(cells[i].rdir)[0] is not None:
            c = cells[i]
            assert c.task is not None
            _show(progress, c.task, c.rdir)
            summary, _ = summary_or_damage(c.rdir)
            assert summary is not None
            _done(progress, c.task, c.head, c.rdir, summary)
            done.append(summary)
            i, t_cell = i + 1, time.time()
        if i < len(cells):
            current = cells[i].task
            assert current is not None
            _show(progress, current, cells[i].rdir)

    with open(launch_log, "a") as out:
        start = out.tell()
        proc = _launch(cmd, env, out)
        while True:
            try:
                rc = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                advance()
            if stop:
                _stop(proc)
                _forget(cells[i + 1 :], progress)
                raise Stopped(stop[0])
            if timeout_s and time.time() - t_cell > timeout_s:
                reason = f"timeout after {timeout_s:.0f} s"
                rc = _stop(proc)
                break
    advance()
    if i == len(cells):
        return done, []
    with open(launch_log, errors="replace") as f:
        f.seek(start)
        said = f.read().splitlines()[1:]  # after the command line
    c = cells[i]
    assert c.task is not None
    done.append(_finish(c.spec, c.rdir, progress, c.head, c.task, rc or 1, reason, c.log_start, t_cell, stop, said))
    left = cells[i + 1 :]
    _forget(left, progress)
    return done, left


def _forget(cells: list[_Held], progress: Progress) -> None:
    """Cells a warm launch never reached: their logs lose the command line written for it."""
    for c in cells:
        with open(c.rdir / "worker.log", "r+") as f:
            f.truncate(c.log_start)
        if c.task is not None:
            progress.remove_task(c.task)


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
        final_of=spec.final_of,
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

"""Fault injection: a run is killed, stopped or damaged at named points - a worker SIGKILLed at
a hook (LBBENCH_FAULT=point:rank:count, lbbench/worker/faults.py), `lbbench run` signalled or
killed, a results file truncated or garbled - and then run again. Every case asserts what a
user relies on: the run finishes, its final weights equal an uninterrupted run's bit for bit
(CPU), its MLLOG has exactly one run_start and one run_stop and passes MLPerf's checker, and
`lbbench status` tells the truth on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BIN, assert_mlperf_compliant, lbbench, write_suite

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

SUITE = """
name: faults
workload:
  name: digits
  model: resnet_tiny
  data: {{kind: folder, path: "{data}"}}
  target_top1: 0.999
  max_epochs: 3
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix: {{methods: [{{name: sgd}}], global_batch: [64], workers: [2]}}
run: {{stop_at_target: false, checkpoint_every: 1, keep_checkpoints: 2}}
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory, digits_dir) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "faults.yaml", SUITE.format(data=digits_dir))


@pytest.fixture(scope="module")
def reference(suite, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run's final weights."""
    res = tmp_path_factory.mktemp("reference")
    p = lbbench("run", suite, "--results", res)
    assert p.returncode == 0, p.stdout[-3000:]
    return torch.load(_run_dir(res) / "final.pt")


def _run_dir(results: Path) -> Path:
    return next((results / "faults").glob("sgd-*"))


def _run(suite: Path, results: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"LBBENCH_FAULT": fault} if fault else {}
    return lbbench("run", suite, "--results", results, env=env)


def _status(suite: Path, results: Path) -> str:
    p = lbbench("status", suite, "--results", results)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _assert_finished_like(rdir: Path, reference: dict[str, torch.Tensor]) -> None:
    summary = json.loads((rdir / "summary.json").read_text())
    assert summary["status"] == "not_reached" and summary["epochs_run"] == 3, summary
    final = torch.load(rdir / "final.pt")
    for k in reference:
        assert torch.equal(final[k], reference[k]), k
    log = (rdir / "mllog.txt").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "run_stop"') == 1
    assert_mlperf_compliant(rdir / "mllog.txt")
    epochs = [
        json.loads(x)["epoch"]
        for x in (rdir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "epoch"
    ]
    assert epochs == [1, 2, 3]


# point, rank, count -> the state `lbbench status` must report after the crash
CRASHES = [
    ("allreduce", 1, 1, "failed"),  # before anything was checkpointed: starts again
    ("mid_epoch", 0, 2, "resumable"),  # halfway through epoch 2: resumes after epoch 1
    ("checkpoint_write", 0, 2, "resumable"),  # epoch 2's checkpoint torn: resumes after epoch 1
    ("checkpoint_digest", 0, 2, "resumable"),  # written, never verified: not trusted, after epoch 1
    ("eval", 1, 3, "resumable"),  # during the last evaluation: resumes after epoch 2
    ("after_run_stop", 0, 1, "resumable"),  # run_stop logged, no summary: redoes epoch 3
]


@pytest.mark.parametrize("point,rank,count,state", CRASHES, ids=[c[0] for c in CRASHES])
def test_a_killed_worker_loses_nothing(point, rank, count, state, suite, reference, tmp_path):
    first = _run(suite, tmp_path, f"{point}:{rank}:{count}")
    assert first.returncode == 1, first.stdout[-3000:]
    rdir = _run_dir(tmp_path)
    summary = json.loads((rdir / "summary.json").read_text())
    assert summary["status"] == "failed" and "killed by SIGKILL" in summary["reason"], summary["reason"]
    status = _status(suite, tmp_path)
    assert f"1 {state}" in status, status
    if point in ("checkpoint_write", "checkpoint_digest"):
        assert "epoch-0002" in status or not list((rdir / "ckpt").glob("epoch-0002.pt"))
    again = _run(suite, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    _assert_finished_like(rdir, reference)
    assert "1 done" in _status(suite, tmp_path)
    assert not list((rdir / "ckpt").glob(".*.tmp")), "torn temporaries are removed"
    if state == "failed":  # no checkpoint: the first attempt's files were set aside, not appended to
        assert (rdir / "attempts" / "1" / "mllog.txt").exists() and (rdir / "attempts" / "1" / "worker.log").exists()


def _start(suite: Path, results: Path, fault: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "lbbench"), "run", str(suite), "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "LBBENCH_STOP_GRACE_S": "20", **({"LBBENCH_FAULT": fault} if fault else {})},
    )


# Rank 0 holds still halfway through epoch 2 (its peer waits in the next allreduce): the run is
# certainly training when the test acts, however fast or loaded the machine.
HOLD = "mid_epoch:0:2:pause={s}"


def _wait_for_epoch(results: Path, epoch: int, timeout: float = 300) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        dirs = list((results / "faults").glob("sgd-*")) if (results / "faults").exists() else []
        if dirs and (dirs[0] / "metrics.jsonl").exists():
            rows = [json.loads(x) for x in (dirs[0] / "metrics.jsonl").read_text().splitlines() if x.strip()]
            if any(r["kind"] == "step" and r["epoch"] >= epoch for r in rows):
                return dirs[0]
        time.sleep(0.05)
    raise AssertionError(f"the run never reached epoch {epoch}")


def _workers(rdir: Path) -> list[int]:
    pattern = f"^\\S+ -m lbbench.backends.torch.train {rdir}"  # the workers, not the launcher naming them
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signalling_lbbench_run_stops_every_worker_and_leaves_the_run_resumable(sig, code, suite, reference, tmp_path):
    proc = _start(suite, tmp_path, HOLD.format(s=120))
    rdir = _wait_for_epoch(tmp_path, 2)
    assert len(_workers(rdir)) == 2
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, out[-3000:]
    assert "left resumable" in out
    assert _workers(rdir) == [], "no worker outlives the stop"
    assert not (rdir / "summary.json").exists()
    assert "1 resumable" in _status(suite, tmp_path)
    again = _run(suite, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    _assert_finished_like(rdir, reference)


def test_a_killed_lbbench_run_never_lets_a_second_one_train_the_same_cell(suite, reference, tmp_path):
    """SIGKILL to `lbbench run` leaves its launcher and workers training (another process group):
    status says running, and a second `lbbench run` does not start a second set of workers."""
    proc = _start(suite, tmp_path, HOLD.format(s=15))
    rdir = _wait_for_epoch(tmp_path, 2)
    proc.kill()
    proc.wait()
    assert len(_workers(rdir)) == 2
    status = _status(suite, tmp_path)
    assert "1 running" in status and "still training" in status, status
    second = _run(suite, tmp_path)
    assert second.returncode == 0 and "still training" in second.stdout, second.stdout[-3000:]
    deadline = time.time() + 300
    while _workers(rdir) and time.time() < deadline:  # the first run's workers finish on their own
        time.sleep(0.2)
    _assert_finished_like(rdir, reference)
    assert (rdir / "worker.log").read_text().count("$ ") == 1  # one launch only


def _crash_in_epoch_3(suite: Path, results: Path) -> Path:
    assert _run(suite, results, "mid_epoch:0:3").returncode == 1
    return _run_dir(results)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(suite, reference, tmp_path):
    rdir = _crash_in_epoch_3(suite, tmp_path)
    newest = rdir / "ckpt" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    status = _status(suite, tmp_path)
    assert "1 resumable" in status and "epoch-0002.pt will not be used" in status and "after epoch 1" in status
    again = _run(suite, tmp_path)
    assert again.returncode == 0 and "resuming from its checkpoint (after epoch 1)" in again.stdout
    _assert_finished_like(rdir, reference)


def test_a_garbled_summary_of_a_finished_run_is_redone_from_its_checkpoints(suite, reference, tmp_path):
    assert _run(suite, tmp_path).returncode == 0
    rdir = _run_dir(tmp_path)
    (rdir / "summary.json").write_bytes(os.urandom(64))
    assert "1 damaged" in _status(suite, tmp_path) or "1 resumable" in _status(suite, tmp_path)
    report = lbbench("report", tmp_path / "faults")
    assert report.returncode == 0 and "damaged summary" in report.stderr
    again = _run(suite, tmp_path)
    assert again.returncode == 0 and "damaged summary" in again.stdout, again.stdout[-2000:]
    _assert_finished_like(rdir, reference)


def test_a_log_cut_shorter_than_every_checkpoint_means_a_clean_restart(suite, reference, tmp_path):
    rdir = _crash_in_epoch_3(suite, tmp_path)
    log = rdir / "mllog.txt"
    log.write_bytes(log.read_bytes()[:200])  # shorter than any checkpoint recorded: no resume is clean
    status = _status(suite, tmp_path)
    assert "restarts from epoch 1" in status, status
    again = _run(suite, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    _assert_finished_like(rdir, reference)
    assert len((rdir / "attempts" / "1" / "mllog.txt").read_bytes()) == 200  # set aside, not extended
    assert (rdir / "attempts" / "1" / "ckpt").is_dir()


def test_a_garbled_run_yaml_means_a_clean_restart(suite, reference, tmp_path):
    rdir = _crash_in_epoch_3(suite, tmp_path)
    (rdir / "run.yaml").write_text("{{{ not yaml")
    again = _run(suite, tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    _assert_finished_like(rdir, reference)


def test_two_staggered_runs_train_the_cell_once(suite, reference, tmp_path):
    first = _start(suite, tmp_path, HOLD.format(s=10))  # certainly training when the second starts
    _wait_for_epoch(tmp_path, 2)
    second = _run(suite, tmp_path)
    assert second.returncode == 0 and "running in another lbbench process" in second.stdout
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    rdir = _run_dir(tmp_path)
    _assert_finished_like(rdir, reference)
    assert (rdir / "worker.log").read_text().count("$ ") == 1


AUGMENTED = SUITE.replace("  max_epochs: 3\n", "  max_epochs: 3\n  augment: imagenet\n").replace(
    "workers: [2]}}", "workers: [2], frameworks: [{fw}]}}"
)


def _final(rdir: Path, fw: str) -> dict[str, object]:
    if fw == "torch":
        return dict(torch.load(rdir / "final.pt"))
    import numpy as np

    with np.load(rdir / "final.npz") as z:
        return {k: z[k] for k in z.files}


def _equal(a: object, b: object) -> bool:
    import numpy as np

    return bool(torch.equal(a, b)) if isinstance(a, torch.Tensor) else bool(np.array_equal(a, b))


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_a_resumed_run_with_random_augmentation_equals_the_uninterrupted_one(fw, tmp_path, digits_dir, reference):
    """Random crops and flips are drawn per (seed, epoch, rank): a worker killed halfway through
    epoch 2 resumes after epoch 1 and draws what the uninterrupted run drew."""
    suite = write_suite(tmp_path / "aug.yaml", AUGMENTED.format(data=digits_dir, fw=fw))
    clean = lbbench("run", suite, "--results", tmp_path / "clean")
    assert clean.returncode == 0, clean.stdout[-3000:]
    killed = lbbench("run", suite, "--results", tmp_path / "killed", env={"LBBENCH_FAULT": "mid_epoch:0:2"})
    assert killed.returncode == 1, killed.stdout[-3000:]
    again = lbbench("run", suite, "--results", tmp_path / "killed")
    assert again.returncode == 0 and "resum" in again.stdout, again.stdout[-3000:]
    a, b = (_final(next((tmp_path / r / "faults").glob("sgd-*")), fw) for r in ("clean", "killed"))
    assert a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if fw == "torch":  # the augmentation is on: training differs from the un-augmented reference
        assert not all(_equal(a[k], reference[k]) for k in reference)

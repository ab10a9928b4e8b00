"""A killed job loses nothing that was checkpointed; a diverging run is isolated; two
`lbbench run` on one results directory never run a cell twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from helpers import BIN, assert_mlperf_compliant, lbbench

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")

SUITE = """
name: {name}
workload:
  name: digits
  model: resnet_tiny
  data: {{kind: folder, path: "${{LBBENCH_DIGITS}}"}}
  target_top1: 0.5
  max_epochs: {epochs}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix:
  methods: [{methods}]
  global_batch: [{batches}]
  workers: [2]
  frameworks: [{fw}]
run: {{stop_at_target: false, checkpoint_every: 1}}
"""


def write(tmp, name, epochs=4, methods="{name: sgd}", batches="32", fw="torch"):
    path = tmp / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, epochs=epochs, methods=methods, batches=batches, fw=fw))
    return path


def summaries(results, suite):
    return {p.parent.name: json.loads(p.read_text()) for p in (results / suite).glob("*/summary.json")}


def _worker_pids(run_dir, fw="torch"):
    out = subprocess.run(
        ["pgrep", "-f", f"^\\S+ -m lbbench.backends.{fw}.train {run_dir}"], capture_output=True, text=True
    )
    return sorted(int(x) for x in out.stdout.split())


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_killed_worker_resumes_from_checkpoint_and_matches_uninterrupted(fw, tmp_path, digits_dir):
    env = {**os.environ, "LBBENCH_DIGITS": str(digits_dir)}
    suite = write(tmp_path, "kill", fw=fw)
    ckpt2 = f"epoch-0002{'.pt' if fw == 'torch' else '.pkl'}"
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(
        [str(BIN / "lbbench"), "run", str(suite), "--results", str(killed)],
        # rank 0 holds still in epoch 3 (the fault hook's pause): epoch 2's checkpoint is there and
        # both ranks alive when the test kills one - on a fast machine the run otherwise finishes first
        env={**env, "LBBENCH_FAULT": "mid_epoch:0:3:pause=60"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    run_dir = None
    while time.time() < deadline:  # wait until epoch 2 is checkpointed and epoch 3 is under way
        dirs = list((killed / "kill").glob("sgd-*"))
        if dirs:
            run_dir = dirs[0]
            rows = (
                [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
                if (run_dir / "metrics.jsonl").exists()
                else []
            )
            if (run_dir / "ckpt" / ckpt2).exists() and any(r["kind"] == "step" and r["epoch"] == 3 for r in rows):
                break
        time.sleep(0.05)
    pids = _worker_pids(run_dir, fw)
    assert len(pids) == 2, pids
    os.kill(pids[-1], signal.SIGKILL)  # one rank dies mid-epoch 3
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    first = summaries(killed, "kill")[run_dir.name]
    assert first["status"] == "failed" and "status" in first["reason"] and first["log_tail"]
    assert (run_dir / "ckpt" / ckpt2).exists()

    again = lbbench("run", suite, "--results", killed, env={"LBBENCH_DIGITS": str(digits_dir)})
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resuming from its checkpoint" in again.stdout
    resumed = summaries(killed, "kill")[run_dir.name]
    assert resumed["status"] == "success" and resumed["epochs_run"] == 4
    assert resumed["preemptions"] == 1 and resumed["time_to_target_valid"] is False and resumed["time_lost_s"] > 0

    ref = lbbench("run", suite, "--results", clean, env={"LBBENCH_DIGITS": str(digits_dir)})
    assert ref.returncode == 0
    reference = summaries(clean, "kill")[run_dir.name]
    assert reference["preemptions"] == 0 and reference["time_to_target_valid"] is True
    if fw == "torch":
        a, b = torch.load(run_dir / "final.pt"), torch.load(clean / "kill" / run_dir.name / "final.pt")
        for k in a:  # bitwise: same data order, same ops, same state restored
            assert torch.equal(a[k], b[k]), k
    else:  # TensorFlow with op determinism on: bitwise too
        a, b = np.load(run_dir / "final.npz"), np.load(clean / "kill" / run_dir.name / "final.npz")
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k
    assert (resumed["steps_run"], resumed["samples_run"], resumed["best_top1"]) == (
        reference["steps_run"],
        reference["samples_run"],
        reference["best_top1"],
    )
    epochs = [
        json.loads(x)["epoch"]
        for x in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "epoch"
    ]
    assert epochs == [1, 2, 3, 4]  # the lost part of epoch 3 was cut away
    log = (run_dir / "mllog.txt").read_text()
    assert log.count('"key": "run_start"') == 1 and log.count('"key": "lbbench_resumed"') == 1
    assert_mlperf_compliant(run_dir / "mllog.txt")


def test_diverging_run_is_marked_and_the_matrix_goes_on(tmp_path, digits_dir):
    methods = "{name: sgd, label: absurd, lr: {rule: constant, base_lr: 1.0e+6, schedule: constant}}, {name: sgd}"
    suite = write(tmp_path, "div", epochs=2, methods=methods, batches="64")
    p = lbbench("run", suite, "--results", tmp_path / "r", env={"LBBENCH_DIGITS": str(digits_dir)})
    assert p.returncode == 0, p.stdout[-3000:]
    by_label = {s["label"]: s for s in summaries(tmp_path / "r", "div").values()}
    assert by_label["absurd"]["status"] == "diverged" and by_label["absurd"]["diverged_at_step"] >= 1
    assert "training loss is" in by_label["absurd"]["diverged_reason"]
    assert by_label["sgd"]["status"] == "success"
    assert "| absurd | 64 | torch | 2 | 1 | 1 | 1 diverged |" in p.stdout
    assert "| sgd | 64 | torch | 2 | 1 | 1 | 1 success |" in p.stdout


def test_two_concurrent_runs_do_each_cell_once(tmp_path, digits_dir):
    suite = write(tmp_path, "lock", epochs=1, batches="64, 128, 256, 512")
    env = {**os.environ, "LBBENCH_DIGITS": str(digits_dir)}
    cmd = [str(BIN / "lbbench"), "run", str(suite), "--results", str(tmp_path / "r")]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = summaries(tmp_path / "r", "lock")
    assert len(runs) == 4 and all(s["status"] in ("success", "not_reached") for s in runs.values())
    for rid in runs:  # every cell's worker ran exactly once, in one of the two processes
        log = (tmp_path / "r" / "lock" / rid / "worker.log").read_text()
        assert log.count("$ ") == 1, rid


def test_status_reports_done_resumable_and_not_started(tmp_path, digits_dir, monkeypatch):
    from lbbench.suite import expand, load_suite

    suite = write(tmp_path, "st", epochs=2, batches="64, 128, 256")
    env = {"LBBENCH_DIGITS": str(digits_dir)}
    r = tmp_path / "r"
    assert lbbench("run", suite, "--results", r, "--only", "*-b64-*", env=env).returncode == 0
    p = lbbench("status", suite, "--results", r, env=env)
    assert p.returncode == 0, p.stderr
    assert "1 done, 2 not started" in p.stdout
    # a checkpoint left by an interrupted attempt of the same RunSpec makes a cell resumable
    monkeypatch.setenv("LBBENCH_DIGITS", str(digits_dir))
    spec = next(x for x in expand(load_suite(suite))[0] if x.global_batch == 128)
    rdir = r / "st" / spec.run_id
    (rdir / "ckpt").mkdir(parents=True)
    spec.save(rdir / "run.yaml")
    ckpt = rdir / "ckpt" / "epoch-0001.pt"
    ckpt.write_bytes(b"an interrupted attempt's checkpoint")
    p = lbbench("status", suite, "--results", r, env=env)  # no digest: not trusted
    assert "1 done, 2 not started" in p.stdout and "damaged checkpoint(s) epoch-0001.pt" in p.stdout, p.stdout
    from lbbench.worker.checkpoints import digest

    (rdir / "ckpt" / "epoch-0001.pt.meta.json").write_text(json.dumps({"sha256": digest(ckpt), "log_bytes": {}}))
    p = lbbench("status", suite, "--results", r, env=env)
    assert "1 done, 1 not started, 1 resumable" in p.stdout and "resumes after epoch 1" in p.stdout, p.stdout

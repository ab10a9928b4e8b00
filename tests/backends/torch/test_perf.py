"""Performance features: the FLOP count behind the roofline, the step-time decomposition (its
parts add up), `lbbench bench throughput`, and the GPU-only speed options refused on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from lbbench.store.metrics import read_metrics

from helpers import lbbench, run_worker, spec_from, write_suite

SUITE = """
name: perfsuite
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 2, target_top1: 0.99}}
lr: {{rule: constant, base_lr: 0.05, schedule: constant}}
matrix: {{methods: [{{name: {method}}}], global_batch: [128], workers: [{np}]}}
run: {{checkpoint_every: 0{perf}}}
"""


def suite_text(data, method="sgd", np=2, perf=""):
    return SUITE.format(data=data, method=method, np=np, perf=f", perf: {perf}" if perf else "")


def test_resnet50_flops_match_the_published_count():
    """docs/mlperf.md: 8.18 GFLOP forward, ~24.5 GFLOP per training image (3 x forward)."""
    from lbbench.backends.torch.flops import forward_gflop_per_image
    from lbbench.backends.torch.model import build_model
    from lbbench.worker.roofline import TRAIN_FACTOR

    fwd = forward_gflop_per_image(build_model("resnet50", 1000), 224)
    assert fwd == pytest.approx(8.18, rel=0.005)
    assert TRAIN_FACTOR * fwd == pytest.approx(24.5, abs=0.1)


def test_flops_count_by_hand_for_one_conv_and_one_linear():
    from lbbench.backends.torch.flops import forward_gflop_per_image

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, bias=False),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    )
    macs = 5 * 5 * 4 * 3 * 9 + 4 * 5  # conv: H*W*C_out*C_in*k*k; linear: in*out
    assert forward_gflop_per_image(net, 5) == pytest.approx(2 * macs / 1e9)


def test_roofline_utilisation_and_peaks():
    from lbbench.worker.roofline import peak_tflops, utilisation

    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "none") == pytest.approx(156.0)
    assert peak_tflops("cpu (2 threads of 2)", "none") is None
    assert peak_tflops("cpu", "none", override=1.5) == 1.5
    u = utilisation(24.5, 3000.0, 989.4)
    assert u["achieved_tflops"] == pytest.approx(73.5) and u["mfu"] == pytest.approx(73.5 / 989.4)
    assert utilisation(24.5, 100.0, None)["mfu"] is None


def test_default_perf_options_keep_run_ids(tmp_path, digits_dir):
    plain = spec_from(suite_text(digits_dir), tmp_path)
    assert "perf" not in plain.identity()  # ids of runs from before the options existed hold
    fast = spec_from(suite_text(digits_dir, perf="{amp: bf16}"), tmp_path)
    assert fast.run_id != plain.run_id
    peak = spec_from(suite_text(digits_dir, perf="{peak_tflops: 2.0}"), tmp_path)
    assert peak.run_id == plain.run_id  # only changes a reported ratio


def test_gpu_only_options_are_refused_on_cpu(tmp_path, digits_dir):
    assert not torch.cuda.is_available(), "this test is about CPU-only machines"
    # 1. lbbench run, before any worker starts
    suite = write_suite(tmp_path / "amp.yaml", suite_text(digits_dir, perf="{amp: bf16, channels_last: true}"))
    p = lbbench("run", suite, "--results", tmp_path / "res")
    assert p.returncode == 2
    assert (
        "amp: bf16" in p.stderr and "channels_last: true" in p.stderr and "CUDA" in p.stderr and "amp.yaml" in p.stderr
    )
    assert not (tmp_path / "res").exists()
    # 2. the benchmark
    b = lbbench("bench", "throughput", "--model", "resnet_tiny", "--amp", "fp16")
    assert b.returncode == 2 and "amp: fp16" in b.stderr
    # 3. unknown options are suite errors with a line number
    bad = write_suite(tmp_path / "bad.yaml", suite_text(digits_dir, perf="{turbo: true}"))
    p = lbbench("plan", bad)
    assert p.returncode == 2 and "bad.yaml:6" in p.stderr and "run.perf.turbo" in p.stderr


@pytest.mark.slow
def test_gpu_only_options_are_refused_by_the_worker_itself(tmp_path, digits_dir):
    """Other launchers, other nodes: the worker exits 2 with the same reason before any work."""
    assert not torch.cuda.is_available(), "this test is about CPU-only machines"
    spec = spec_from(suite_text(digits_dir, np=1, perf="{dali_device: gpu}"), tmp_path)
    rdir = tmp_path / "run"
    rdir.mkdir()
    spec.save(rdir / "run.yaml")
    w = subprocess.run(
        [sys.executable, "-m", "lbbench.backends.torch.train", str(rdir)], capture_output=True, text=True, timeout=300
    )
    assert w.returncode == 2 and "dali_device: gpu" in w.stderr and "torch.cuda.is_available() is False" in w.stderr
    assert not (rdir / "summary.json").exists()


def test_fp16_loss_scaling_is_refused_for_methods_with_their_own_update(tmp_path, digits_dir):
    from lbbench.backends.torch.perf import PerfOptionError, check

    gpu = torch.device("cuda", 0)  # check() only looks at the device type
    with pytest.raises(PerfOptionError, match="kfac updates the weights itself"):
        check(spec_from(suite_text(digits_dir, method="kfac", perf="{amp: fp16}"), tmp_path), gpu)
    check(spec_from(suite_text(digits_dir, method="kfac", perf="{amp: bf16}"), tmp_path), gpu)
    check(spec_from(suite_text(digits_dir, method="lars", perf="{amp: fp16}"), tmp_path), gpu)


def test_fusion_threshold_reaches_the_workers(tmp_path, digits_dir):
    from lbbench.launch.commands import mpirun_command, worker_env

    spec = spec_from(suite_text(digits_dir, perf="{fusion_threshold_mb: 64}"), tmp_path)
    assert worker_env(spec) == {"HOROVOD_FUSION_THRESHOLD": str(64 * 2**20)}
    cmd = mpirun_command(spec, tmp_path)
    assert cmd[cmd.index("HOROVOD_FUSION_THRESHOLD") - 1] == "-x"


@pytest.mark.slow
def test_decomposition_parts_add_up(tmp_path, digits_dir):
    """Per epoch: data + compute + allreduce + optimizer + other + overhead = epoch_s (by
    construction), and the four timed parts are at least 90% of the steps' time for SGD (the
    untimed rest is zero_grad and loss bookkeeping). With fp16 allreduce compression on CPU."""
    spec = spec_from(suite_text(digits_dir, perf="{compression: fp16, fusion_threshold_mb: 1}"), tmp_path)
    s = run_worker(spec, tmp_path / "run")
    assert s.ranks_agree and s.perf["compression"] == "fp16"
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for r in epochs:
        parts = sum(r[f"{k}_s"] for k in ("data", "compute", "allreduce", "optimizer", "other", "overhead"))
        assert parts == pytest.approx(r["epoch_s"], rel=1e-9)
        timed = sum(r[f"{k}_s"] for k in ("data", "compute", "allreduce", "optimizer"))
        assert timed >= 0.9 * r["step_s"], r
        assert r["overhead_s"] <= 0.1 * r["epoch_s"], r
        assert min(r[f"{k}_s"] for k in ("data", "compute", "allreduce", "optimizer")) > 0
        assert r["compute_images_per_s"] > r["images_per_s"]
    total = s.time_parts_s
    assert total["compute"] == pytest.approx(sum(r["compute_s"] for r in epochs))
    assert total["eval"] == pytest.approx(sum(r["eval_s"] for r in epochs))
    assert s.train_gflop_per_image > 0 and s.mfu is None  # no known peak for a CPU
    assert s.achieved_tflops == pytest.approx(s.train_gflop_per_image * s.images_per_s / 1e3)


@pytest.mark.slow
def test_bench_throughput_result_is_well_formed(tmp_path, digits_dir):
    out = tmp_path / "tp.json"
    p = lbbench(
        "bench", "throughput", "--model", "resnet_tiny", "--batch", "32", "--np", "1,2", "--iters", "3", "--out", out
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert [r["np"] for r in res["runs"]] == [1, 2]
    for r in res["runs"]:
        w, t = r["images_per_s_per_worker"], r["images_per_s_total"]
        assert w["mean"] > 0 and w["ci95"] >= 0 and t["mean"] > 0
        assert t["mean"] == pytest.approx(r["np"] * w["mean"], rel=0.5)  # per-iteration sums vs per-worker means
        # the headline is images over time: every worker's images of the timed steps / the seconds
        assert r["images_per_s"] == pytest.approx(r["np"] * 32 / r["step_s"], rel=1e-9)
        assert sum(r["decomposition_s_per_step"].values()) <= r["step_s"] * 1.01
        assert r["data"] == "synthetic" and r["iters"] == 3
    one, two = res["runs"]
    assert one["slowest_rank_wait_s_per_step"] is None  # one rank waits for nobody
    # of the exposed allreduce, the part spent waiting for the other rank (at most all of it)
    assert 0 <= two["slowest_rank_wait_s_per_step"] <= two["decomposition_s_per_step"]["allreduce"] + 1e-9
    assert res["runs"][0]["scaling_efficiency"] == 1.0
    eff = res["runs"][1]["scaling_efficiency"]
    assert eff == pytest.approx(res["runs"][1]["images_per_s"] / 2 / res["runs"][0]["images_per_s"])
    # DALI-fed, over the digits folder
    out2 = tmp_path / "tp-dali.json"
    p = lbbench(
        "bench",
        "throughput",
        "--model",
        "resnet_tiny",
        "--batch",
        "32",
        "--data",
        "dali",
        "--data-dir",
        digits_dir,
        "--iters",
        "2",
        "--out",
        out2,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out2.read_text())["runs"][0]
    assert r["data"] == "dali" and r["decomposition_s_per_step"]["data"] > 0

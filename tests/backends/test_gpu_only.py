"""The GPU path on a GPU (marked ``gpu``; skipped where no CUDA GPU is visible, so never in CI):
what the CPU tests can only approximate. One tiny run per framework with GPU decoding, bf16
autocast and (PyTorch) channels_last, plain SGD and K-FAC (fp32 factors under AMP); its weights
come back to a CPU-only reader; the throughput benchmark reports an MFU and a decomposition
that fits its step; two ranks on one GPU are refused."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lbbench.launch.commands import local_gpu_present

from helpers import lbbench, write_suite

pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.skipif(not local_gpu_present(), reason="no CUDA GPU")]

SUITE = """
name: gpu
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 2,
           target_top1: 0.999}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 64, schedule: poly, warmup_epochs: 1}}
matrix: {{methods: [{{name: sgd}}, {{name: kfac}}], global_batch: [64], workers: [{np}], frameworks: [{fw}]}}
run: {{checkpoint_every: 1, perf: {{amp: bf16, dali_device: gpu{extra}}}}}
"""


def _framework(fw: str) -> None:
    if importlib.util.find_spec("torch" if fw == "torch" else "tensorflow") is None:
        pytest.skip(f"this GPU environment holds the other framework, not {fw}")


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_sgd_and_kfac_train_on_the_gpu_with_gpu_decoding_and_bf16(fw, tmp_path, digits_dir):
    _framework(fw)
    extra = ", channels_last: true" if fw == "torch" else ""
    suite = write_suite(tmp_path / "s.yaml", SUITE.format(data=digits_dir, np=1, fw=fw, extra=extra))
    p = lbbench("run", suite, "--results", tmp_path / "r", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summaries = [json.loads(s.read_text()) for s in (tmp_path / "r").rglob("summary.json")]
    assert sorted(s["method"] for s in summaries) == ["kfac", "sgd"]
    for s in summaries:
        assert s["status"] == "not_reached" and s["epochs_run"] == 2, s
        assert s["best_top1"] > 0.2, s  # it learned: 10 classes, chance is 0.1
        assert s["accelerator"] and "cpu" not in s["device"].lower(), s
        assert s["mfu"] is not None and 0 < s["mfu"] < 1, s  # a known GPU's peak
    if fw == "torch":  # weights saved as CPU tensors: readable on a login node without a GPU
        import torch

        for final in (tmp_path / "r").rglob("final.pt"):
            state = torch.load(final, weights_only=False)
            assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))


def test_bench_throughput_on_the_gpu_reports_mfu_and_a_decomposition_that_fits(tmp_path):
    _framework("torch")
    out = tmp_path / "tp.json"
    p = lbbench(
        "bench", "throughput", "--model", "resnet50", "--batch", "64", "--amp", "bf16", "--channels-last",
        "--np", "1", "--iters", "3", "--out", out, env={"CUDA_VISIBLE_DEVICES": "0"},
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (r,) = json.loads(out.read_text())["runs"]
    assert "cpu" not in r["device"].lower() and r["mfu"] is not None and 0 < r["mfu"] < 1, r
    assert 0 < sum(r["decomposition_s_per_step"].values()) <= r["step_s"] * 1.01  # CUDA events, per stream


def test_two_ranks_on_one_gpu_are_refused(tmp_path, digits_dir):
    _framework("torch")
    suite = write_suite(tmp_path / "s.yaml", SUITE.format(data=digits_dir, np=2, fw="torch", extra=""))
    p = lbbench("run", suite, "--only", "sgd*", "--results", tmp_path / "r", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert p.returncode == 1, p.stdout[-2000:]
    (summary,) = (tmp_path / "r").rglob("summary.json")
    assert "2 ranks share GPU 0" in json.loads(summary.read_text())["reason"], p.stdout[-2000:]

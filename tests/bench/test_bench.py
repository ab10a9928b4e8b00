"""Benchmarks are not timed tests: check that the bench command produces a well-formed result."""

import json

import pytest

from lbbench.methods import REGISTRY

from helpers import lbbench

pytestmark = pytest.mark.slow


def test_bench_optim_writes_a_result_for_every_method(tmp_path):
    out = tmp_path / "optim.json"
    p = lbbench("bench", "optim", "--model", "resnet_tiny", "--batch", "8", "--steps", "2", "--out", out)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["benchmark"] == "optim" and res["model"] == "resnet_tiny" and res["batch_per_worker"] == 8
    assert set(res["methods"]) == set(REGISTRY)
    assert res["methods"]["sgd"]["relative_to_sgd"] == 1.0
    for name, r in res["methods"].items():
        assert r["step_s"] > 0 and len(r["step_times_s"]) >= 2, name
    assert res["methods"]["kfac"]["inverse_every"] == 100 and res["methods"]["kfac"]["invert_s"] > 0
    assert "x SGD" in p.stdout


def test_bench_loop_compares_lbbench_with_a_bare_loop(tmp_path):
    out = tmp_path / "loop.json"
    p = lbbench(
        "bench",
        "loop",
        "--model",
        "resnet_tiny",
        "--batch",
        "8",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--batches-per-iter",
        "1",
        "--out",
        out,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["benchmark"] == "loop" and set(res["frameworks"]) == {"torch", "tf"}
    for fw, r in res["frameworks"].items():
        assert len(r["bare"]) == len(r["lbbench"]) == len(r["ratio"]) == 2, fw
        assert all(b > 0 and x > 0 for b, x in zip(r["bare"], r["lbbench"]))
        assert r["ratio"] == pytest.approx([x / b for x, b in zip(r["lbbench"], r["bare"])])
        assert min(r["ratio"]) <= r["median_ratio"] <= max(r["ratio"])
    assert lbbench("bench", "loop", "--framework", "jax").returncode == 2

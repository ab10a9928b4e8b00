"""The allreduce overlapped with the backward pass (lbbench/backends/torch/loop.py: OverlappedAllreduce) on 2 real
Gloo ranks: bit-identical to one grouped allreduce after the backward pass, buckets really
starting during it; and a whole run with it equal to one without it, bit for bit."""

from __future__ import annotations

import json
import re

import pytest

from helpers import gloo_script, run_worker, small_spec


@pytest.fixture(scope="module")
def overlap_worker_output() -> str:
    p = gloo_script(2, "backends/torch/overlap_worker.py")
    return p.stdout + p.stderr


@pytest.mark.slow
def test_overlapped_buckets_equal_one_grouped_allreduce_bit_for_bit(overlap_worker_output):
    lines = re.findall(r"RANK (\d) PLAIN (\S+ loss=\S+) OVERLAP (\S+ loss=\S+) EARLY (\d+)", overlap_worker_output)
    assert len(lines) == 2, overlap_worker_output[-4000:]
    for _, plain, overlapped, early in lines:
        assert overlapped == plain  # the same float64 bytes, the same averaged loss
        assert int(early) >= 2  # several buckets started while the backward pass still ran
    assert lines[0][1] == lines[1][1]  # and both ranks hold the same average


@pytest.mark.slow
def test_keep_local_leaves_the_ranks_own_gradient_until_finish(overlap_worker_output):
    """The in-place sums overwrite .grad while the backward pass's caller may still read it; a
    step whose diagnostics read the local gradient (the noise scale's micro-batch norms) arms
    with keep_local, and then sees its own gradient until finish() - and the same average after."""
    in_place = re.findall(r"RANK \d IN-PLACE LOCAL-KEPT (\w+)", overlap_worker_output)
    kept = re.findall(r"RANK \d KEEP-LOCAL LOCAL-KEPT (\w+) SAME-AVERAGE (\w+)", overlap_worker_output)
    assert len(in_place) == 2 and len(kept) == 2, overlap_worker_output[-4000:]
    assert in_place == ["False", "False"]  # already averaged in place 0.3 s after the backward
    assert kept == [("True", "True"), ("True", "True")]


@pytest.mark.slow
def test_buckets_follow_the_backward_pass_whatever_the_optimizer_groups(overlap_worker_output):
    """An optimizer with a no-decay group lists every bias after every weight; taken in that
    order the first bucket held all biases and could start only at the end of the backward pass.
    Put in the model's order (as the loop does), the buckets start in index order as the backward
    pass reaches them - all but the last, which holds the parameter without a gradient."""
    found = re.findall(r"RANK (\d) (GROUPS|MODEL) STARTED (\S*) OF (\d+)", overlap_worker_output)
    assert len(found) == 4, overlap_worker_output[-4000:]
    for _, name, order, n in found:
        if name == "MODEL":
            assert order == ",".join(str(i) for i in range(int(n) - 1))
        else:  # the bucket of biases did not start during the backward pass
            assert order and "0" not in order.split(",")


@pytest.mark.slow
def test_a_run_with_the_overlap_equals_one_without(tmp_path, digits_dir):
    """np = 2 x accum 2, float64: the final weights' digests match with and without the overlap
    (the overlap is not part of the run id: it changes when the sums start, not what they are)."""
    on = small_spec(tmp_path, digits_dir, "lars", "{eta: 0.01}", np=2)
    on = on.model_copy(update={"diag_every": 2}).with_id()  # diagnostics on some steps, not all
    off = on.model_copy(update={"perf": on.perf.model_copy(update={"overlap_allreduce": False})}).with_id()
    assert on.perf.overlap_allreduce and on.run_id == off.run_id
    a = run_worker(on, tmp_path / "on")
    b = run_worker(off, tmp_path / "off")
    assert a.param_digests == b.param_digests and a.ranks_agree
    # the noise scale's micro-batch norms read each rank's own gradient after the backward pass:
    # the overlapped allreduce must not have averaged it yet (it keeps it on diagnostic steps)
    diag = [
        [
            (r["step"], r["micro_grad_sq"], r["global_grad_sq"])
            for r in map(json.loads, open(d / "metrics.jsonl"))
            if "micro_grad_sq" in r
        ]
        for d in (tmp_path / "on", tmp_path / "off")
    ]
    assert diag[0] and diag[0] == diag[1]
    # the exposed allreduce is part of the whole span the summary reports
    assert 0 < a.time_parts_s["allreduce"] <= a.allreduce_total_s
    assert b.time_parts_s["allreduce"] == pytest.approx(b.allreduce_total_s, rel=0.2)

"""`summarize` on hand-made timings: the headline and seconds per step use the slowest rank's
window, so the mean decomposition never exceeds a step (a rank that starts its timed window
early waits for the others inside its allreduce, making its parts longer than rank 0's window)."""

import pytest

from lbbench.bench.core import slowest_rank_wait, summarize


def test_the_timed_window_is_the_slowest_ranks():
    # 2 ranks, 2 iterations of 5 steps each, batch 4; rank 1 waited 0.5 s longer in its allreduce
    per_rank = [[20.0, 20.0], [18.0, 18.0]]
    parts = [dict(compute=0.6, allreduce=0.3, allreduce_total=0.4), dict(compute=0.6, allreduce=0.8)]
    res = summarize(per_rank, parts, [1.0, 1.5], iters=2, per_iter=5, batch=4)
    assert res["step_s"] == pytest.approx(0.15)
    assert res["images_per_s"] == pytest.approx(2 * 4 * 10 / 1.5)
    assert res["decomposition_s_per_step"] == pytest.approx(dict(compute=0.06, allreduce=0.055))
    assert sum(res["decomposition_s_per_step"].values()) <= res["step_s"]
    assert res["allreduce_total_s_per_step"] == pytest.approx(0.02)
    assert res["images_per_s_total"]["mean"] == pytest.approx(38.0)


def test_waiting_for_the_slowest_rank_is_told_from_communication():
    # 2 allreduces; in the first rank 0 arrives 0.25 s before rank 1, in the second rank 1 arrives
    # 0.5 s before rank 0; the communication left after the last arrival takes 0.125 s each time
    waits = [[0.375, 0.125], [0.125, 0.625]]
    assert slowest_rank_wait(waits) == pytest.approx((0.25 + 0.5) / 2)
    # every rank's exposed allreduce minus that is the communication nobody hid: 0.125 per wait
    exposed = sum(map(sum, waits)) / 2
    assert exposed - slowest_rank_wait(waits) == pytest.approx(2 * 0.125)
    # not measurable with one rank, without host-timed waits, or with mismatched lists
    assert slowest_rank_wait([[0.1, 0.2]]) is None
    assert slowest_rank_wait([[], []]) is None
    assert slowest_rank_wait([[0.1], [0.1, 0.2]]) is None
    per_rank = [[20.0], [20.0]]
    parts = [dict(allreduce=0.5), dict(allreduce=0.75)]
    res = summarize(per_rank, parts, [1.0, 1.0], iters=1, per_iter=2, batch=4, waits=waits)
    assert res["slowest_rank_wait_s_per_step"] == pytest.approx(0.375 / 2)
    assert summarize(per_rank, parts, [1.0, 1.0], iters=1, per_iter=2, batch=4)["slowest_rank_wait_s_per_step"] is None

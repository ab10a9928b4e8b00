"""The steps-to-result analysis (lbbench/report/scaling.py) on hand-made sweeps whose answers
are worked out by hand in the comments."""

from __future__ import annotations

import math
import re

import pytest

from lbbench.report.scaling import Scaling, fit_critical_batch, markdown, pooled_b_simple, scalings

# S = S_min (1 + B_noise / B) with S_min = 100, B_noise = 256, exactly
MODEL = {b: 100.0 * (1 + 256 / b) for b in (16, 32, 64, 128, 256, 512, 1024, 4096)}


def test_the_fit_recovers_the_model_it_was_made_from():
    s_min, b_noise = fit_critical_batch(MODEL)
    assert s_min == pytest.approx(100.0, rel=1e-6) and b_noise == pytest.approx(256.0, rel=1e-6)


def test_the_fit_of_noisy_points_stays_near_the_model():
    noisy = {b: s * (1.05 if i % 2 else 0.95) for i, (b, s) in enumerate(sorted(MODEL.items()))}
    s_min, b_noise = fit_critical_batch(noisy)
    assert 80 < s_min < 120 and 180 < b_noise < 340


def test_perfect_scaling_knee_and_limit_by_hand():
    sc = Scaling("m", dict(MODEL))
    # samples S.B = 100 (B + 256): 27,200 at B=16; 1.25x that = 34,000 -> B + 256 <= 340 -> B <= 84
    assert sc.perfect_up_to == 64
    # the fewest samples are also at 16, so the knee is the first batch above 84
    assert sc.knee == 128
    assert sc.limit == 4096


def test_the_knee_is_measured_from_the_fewest_samples_not_the_smallest_batch():
    # B=16 needed 1,000 steps (16,000 samples) but B=64 only 100 (6,400): the minimum is at 64,
    # 1.25x = 8,000; B=128 at 60 steps = 7,680 is within it, B=256 at 40 = 10,240 is not
    sc = Scaling("m", {16: 1000.0, 64: 100.0, 128: 60.0, 256: 40.0})
    assert sc.knee == 256
    # from the smallest batch's 16,000 samples every batch stays within 1.25x: perfect to 256
    assert sc.perfect_up_to == 256


def test_too_few_points_say_nothing():
    one = Scaling("m", {64: 10.0})
    assert one.perfect_up_to is None and one.knee is None and one.fit is None and one.limit == 64
    assert fit_critical_batch({64: 10.0, 128: 6.0}) is None  # two points, two parameters: no fit
    none = Scaling("m", {}, missed=[64])
    assert none.limit is None and none.knee is None


def test_pooled_b_simple_is_the_ratio_of_the_sums():
    assert pooled_b_simple([(2.0, 10.0), (2.0, 30.0)]) == pytest.approx(10.0)  # 40 / 4, not mean(5, 15)
    assert pooled_b_simple([(1.0, -5.0), (1.0, 1.0)]) is None  # a negative trace sum: no estimate
    assert pooled_b_simple([]) is None


def test_scalings_from_report_rows():
    rows = [
        {"key": "sgd (torch)", "global_batch": 64, "steps_to_target": 100, "time_to_target_s": 300.0},
        {"key": "sgd (torch)", "global_batch": 64, "steps_to_target": 90, "time_to_target_s": 270.0},  # the best
        {"key": "sgd (torch)", "global_batch": 256, "steps_to_target": 30, "time_to_target_s": 5400.0},
        {"key": "sgd (torch)", "global_batch": 1024, "steps_to_target": None},
        {"key": "lars (torch)", "global_batch": 1024, "steps_to_target": None},
    ]
    out = {sc.method: sc for sc in scalings(rows, {"sgd (torch)": [(1.0, 50.0)]})}
    assert out["sgd (torch)"].steps == {64: 90.0, 256: 30.0} and out["sgd (torch)"].missed == [1024]
    assert out["sgd (torch)"].b_simple == 50.0 and out["lars (torch)"].b_simple is None
    assert out["lars (torch)"].steps == {} and out["lars (torch)"].missed == [1024]
    md = markdown(list(out.values()))
    # sgd: 90 x 64 = 5,760 samples, 30 x 256 = 7,680 <= 1.25 x 5,760 = 7,200? no: knee at 256
    # fewest steps at 256, but the fastest run to the target is at 64 (4.5 min vs 90)
    assert out["sgd (torch)"].fewest_steps == (30.0, 256) and out["sgd (torch)"].fastest == (270.0, 64)
    assert "| sgd (torch) | 30 (256) | 4.5 min (64) | 2 of 3 | 64 | 256 | 256 (1,024) | - | - | 50 |" in md
    assert "| lars (torch) | - | - | 0 of 1 | - | - | - (1,024) |" in md


def test_no_knee_inside_the_range_is_said_so():
    md = markdown([Scaling("m", {64: 100.0, 128: 50.0, 256: 25.0})])  # perfect all the way
    assert "| m | 25 (256) | - | 3 of 3 | 256 | beyond 256 |" in md
    assert math.isfinite(Scaling("m", {64: 100.0, 128: 50.0, 256: 25.0}).fit[0])


def test_the_report_puts_the_scaling_answer_first(tmp_path):
    from lbbench.report.build import build

    from helpers import write_fake_sweep

    res = write_fake_sweep(tmp_path)
    out = build(res)
    (sc,) = out["scaling"]
    assert sc.fit[1] == pytest.approx(256, rel=0.02)  # rounded steps: close to the model
    assert (
        out["figures"][0]["file"] == "steps_to_result.png"
        and "perfect scaling (from the smallest batch)" in out["figures"][0]["series"]
    )
    md = (res / "report.md").read_text()
    assert md.index("## Scaling: steps to result") < md.index("## Cells")
    assert re.search(r"\| sgd \(torch\) \| [\d,]+ \([\d,]+\) \| [\d.,]+ min \([\d,]+\) \| 3 of 3 \|", md), md
    page = (res / "report.html").read_text()
    assert page.index("Scaling: steps to result") < page.index("<summary>Cells: every run")
    assert page.index("data:image/png;base64,") < page.index("<h2>Methods</h2>")  # the figure leads
    assert "<table class='sortable'>" in page
    assert "overflow-x:auto" in page


def test_sensitivity_strips_one_panel_per_tuned_hyperparameter(tmp_path):
    from lbbench.report.plots import sensitivity

    trials = [
        dict(global_batch=b, tuned={"lr.base_lr": lr, "hparams.momentum": m}, best_top1=top1, steps_to_target=st)
        for b, lr, m, top1, st in [
            (64, 0.01, 0.9, 0.95, 40),
            (64, 0.5, 0.8, 0.97, 30),
            (256, 0.01, 0.9, 0.6, None),
            (256, 0.5, 0.8, 0.96, 12),
        ]
    ]
    meta = sensitivity("sgd (torch)", trials, tmp_path)
    png = (tmp_path / meta["file"]).read_bytes()
    assert meta["file"] == "sensitivity_sgd_torch.png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert meta["xlabel"] == "hparams.momentum, lr.base_lr" and meta["series"] == ["B=64", "B=256"]


def test_the_time_decomposition_is_drawn_as_stacked_bars(tmp_path):
    from lbbench.report.build import build
    from lbbench.report.tables import TIME_PARTS

    from helpers import write_fake_sweep

    res = write_fake_sweep(tmp_path)
    out = build(res)
    bars = next(f for f in out["figures"] if f["file"] == "time_breakdown.png")
    assert bars["series"] == list(TIME_PARTS)
    assert bars["bars"] == [f"sgd B={b:,} (torch)" for b in (64, 256, 1024)]  # the time table's rows
    # compute share: 6k / (3 + 6.5k) with k = B / 64 -> 6 / 9 at 64 (hand-worked)
    assert out["times"][0]["compute_share"] == pytest.approx(6 / 9)
    page = (res / "report.html").read_text()
    # the figure in the page, the 14-column table only collapsed below it
    assert page.index("<h2>Where the time goes</h2>") < page.index("<summary>Where the time goes: the numbers")

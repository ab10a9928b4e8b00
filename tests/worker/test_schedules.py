"""Schedules against values computed by hand from docs/methods.md section 0."""

import math

import pytest

from lbbench.worker.schedules import Schedule, goyal_milestones, scaled_lr


def test_mlperf_poly2_with_warmup_hand_values():
    # S = 10 steps/epoch, 2 warm-up epochs (Tw = 20), 5 epochs (T = 50), D = T - Tw + 1 = 31
    s = Schedule("poly", peak_lr=8.0, steps_per_epoch=10, train_epochs=5, warmup_epochs=2, end_lr=1e-4, poly_power=2)
    assert (s.warmup_steps, s.train_steps, s.decay_steps) == (20, 50, 31)
    assert s.lr_at(1) == pytest.approx(0.4)  # 8 * 1/20
    assert s.lr_at(20) == pytest.approx(8.0)
    assert s.lr_at(21) == pytest.approx(1e-4 + (8 - 1e-4) * (1 - 1 / 31) ** 2)
    assert s.lr_at(36) == pytest.approx(1e-4 + (8 - 1e-4) * (15 / 31) ** 2)
    assert s.lr_at(51) == pytest.approx(1e-4)  # t - Tw = 31 = D
    assert s.lr_at(500) == pytest.approx(1e-4)  # clamped at D


def test_goyal_step_schedule_hand_values():
    # 90 epochs, 4 steps each; warm-up 5 epochs from 0.1 to 3.2 (B = 8192: 0.1 * 8192/256)
    peak = scaled_lr("linear", 0.1, 256, 8192)
    assert peak == pytest.approx(3.2)
    s = Schedule(
        "step",
        peak_lr=peak,
        steps_per_epoch=4,
        train_epochs=90,
        warmup_epochs=5,
        warmup_start_lr=0.1,
        milestones=goyal_milestones(90),
    )
    assert goyal_milestones(90) == (30, 60, 80)
    assert s.lr_at(10) == pytest.approx(0.1 + 3.1 * 10 / 20)
    assert s.lr_at(20) == pytest.approx(3.2)
    assert s.lr_at(4 * 30) == pytest.approx(3.2)  # last step of epoch 30
    assert s.lr_at(4 * 30 + 1) == pytest.approx(0.32)  # first step of epoch 31
    assert s.lr_at(4 * 60 + 1) == pytest.approx(0.032)
    assert s.lr_at(4 * 80 + 1) == pytest.approx(0.0032)
    assert goyal_milestones(9) == pytest.approx((3, 6, 8))


def test_cosine_constant_and_scaling_rules():
    s = Schedule("cosine", peak_lr=1.0, steps_per_epoch=10, train_epochs=3, warmup_epochs=1, end_lr=0.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(20) == pytest.approx(0.5)  # halfway through the 20 decay steps
    assert s.lr_at(30) == pytest.approx(0.0, abs=1e-12)
    assert Schedule("constant", 0.3, 10, 3, warmup_epochs=1).lr_at(1) == 0.3
    assert scaled_lr("sqrt", 0.1, 256, 1024) == pytest.approx(0.2)
    assert scaled_lr("constant", 0.1, 256, 1024) == 0.1
    with pytest.raises(ValueError):
        Schedule("exp", 1, 1, 1).lr_at(1)
    assert math.isclose(Schedule("poly", 2.0, 7, 1.0).decay_steps, 8)

"""Schedules against the reference formulas, restated here independently: MLPerf's
PolynomialDecayWithWarmup (the MLPerf ResNet TF2 reference, lars_util.py: evaluated at the
optimizer's iteration count, 0 for the first update, the warmup length a float) and
chainerkfac's LrPolynomialDecay (the LR after each update from the fractional epoch); plus the
step, cosine and constant kinds by hand (docs/methods.md section 0)."""

import math

import pytest

from lbbench.worker.schedules import Schedule, goyal_milestones, scaled_lr


def mlperf_reference(step: int, peak: float, warmup_steps: float, train_steps: int, end: float = 1e-4) -> float:
    """The reference's LR at its iteration ``step`` (= updates done): a linear warmup from 0
    while step <= warmup_steps, then Keras' PolynomialDecay(power 2) of (step - warmup_steps)
    over decay_steps = train_steps - warmup_steps + 1, clipped at decay_steps."""
    if step <= warmup_steps:
        return peak * step / warmup_steps
    decay_steps = train_steps - warmup_steps + 1
    x = min(step - warmup_steps, decay_steps)
    return (peak - end) * (1 - x / decay_steps) ** 2 + end


@pytest.mark.parametrize("spe,warmup,epochs", [(10, 2, 5), (391, 1.5, 4), (40, 16, 58)])
def test_mlperf_poly_is_the_reference_formula_update_by_update(spe, warmup, epochs):
    s = Schedule("poly", peak_lr=8.0, steps_per_epoch=spe, train_epochs=epochs, warmup_epochs=warmup, end_lr=1e-4)
    for t in range(1, s.train_steps + 3):  # update t uses the reference's LR at iteration t - 1
        assert s.lr_at(t) == pytest.approx(mlperf_reference(t - 1, 8.0, warmup * spe, s.train_steps), rel=1e-12)
    assert s.lr_at(1) == 0.0  # the first update: LR(0) = 0 after a warmup from 0
    assert s.warmup_steps == warmup * spe  # a float, not rounded


def chainerkfac_reference(epoch: float, lr0: float, start: float, end: float, p: float) -> float:
    """chainerkfac's LrPolynomialDecay.lr(epoch): lr0 before ``start``, then lr0 (1 - progress)^p, 0 after ``end``."""
    if epoch < start:
        return lr0
    if epoch < end:
        return lr0 * (1.0 - (epoch - start) / (end - start)) ** p
    return 0.0


def test_spngd_polynomial_is_chainerkfacs_schedule():
    """The LR of update t is the one set after update t - 1, at (t - 1) / S epochs."""
    s = Schedule(
        "polynomial", peak_lr=8.18e-3, steps_per_epoch=313, train_epochs=53.0, poly_power=11, decay_start_epochs=1.0
    )
    for t in (1, 2, 313, 314, 1000, 10_000, 16_589, 16_590, 20_000):
        assert s.lr_at(t) == pytest.approx(chainerkfac_reference((t - 1) / 313, 8.18e-3, 1.0, 53.0, 11), rel=1e-12)


def test_goyal_step_schedule_hand_values():
    # 90 epochs, 4 steps each; warm-up 5 epochs (20 updates) from 0.1 to 3.2 (B = 8192: 0.1 * 8192/256)
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
    assert s.lr_at(1) == pytest.approx(0.1)  # Goyal: the first update at 0.1
    assert s.lr_at(11) == pytest.approx(0.1 + 3.1 * 10 / 20)
    assert s.lr_at(21) == pytest.approx(3.2)
    assert s.lr_at(4 * 30) == pytest.approx(3.2)  # last update of epoch 30
    assert s.lr_at(4 * 30 + 1) == pytest.approx(0.32)  # first update of epoch 31
    assert s.lr_at(4 * 60 + 1) == pytest.approx(0.032)
    assert s.lr_at(4 * 80 + 1) == pytest.approx(0.0032)
    assert goyal_milestones(9) == pytest.approx((3, 6, 8))


def test_cosine_constant_and_scaling_rules():
    s = Schedule("cosine", peak_lr=1.0, steps_per_epoch=10, train_epochs=3, warmup_epochs=1, end_lr=0.0)
    assert s.lr_at(11) == pytest.approx(1.0)
    assert s.lr_at(21) == pytest.approx(0.5)  # halfway through the 20 decay steps
    assert s.lr_at(31) == pytest.approx(0.0, abs=1e-12)
    assert Schedule("constant", 0.3, 10, 3, warmup_epochs=1).lr_at(1) == 0.3
    assert scaled_lr("sqrt", 0.1, 256, 1024) == pytest.approx(0.2)
    assert scaled_lr("constant", 0.1, 256, 1024) == 0.1
    with pytest.raises(ValueError):
        Schedule("exp", 1, 1, 1).lr_at(1)
    assert math.isclose(Schedule("poly", 2.0, 7, 1.0).decay_steps, 8)

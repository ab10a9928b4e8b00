"""Divergence rules (lbbench/health.py): a non-finite loss, and top-1 collapsing to chance."""

from lbbench.worker.health import accuracy_collapsed, loss_diverged


def test_non_finite_loss_diverges():
    assert loss_diverged(float("nan")) and loss_diverged(float("inf"))
    assert loss_diverged(2.3) is None


def test_accuracy_collapse_needs_a_good_past_and_a_chance_present():
    assert "collapse" in accuracy_collapsed(0.62, 0.10, classes=10)  # 10 classes: chance 0.1
    assert accuracy_collapsed(0.62, 0.16, classes=10) is None  # above 1.5x chance
    assert accuracy_collapsed(0.45, 0.05, classes=10) is None  # never 5x chance
    assert accuracy_collapsed(None, 0.0, classes=10) is None  # first evaluation
    assert accuracy_collapsed(0.30, 0.001, classes=1000) is not None  # ImageNet: chance 0.001
    assert accuracy_collapsed(0.004, 0.001, classes=1000) is None

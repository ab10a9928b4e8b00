"""The CI regression gate: suites/ci.yaml (every method on the demo data) against the committed
baseline of this machine class; and `compare` catching a deliberately worse configuration."""

from __future__ import annotations

import os
import platform

import pytest

from helpers import GOLDEN, RESULTS, ROOT, lbbench

MACHINE = f"{platform.machine()}-{os.cpu_count()}cpu"
BASELINE = ROOT / "results" / "baselines" / f"ci-{MACHINE}.json"


def test_compare_fails_on_a_worse_configuration_and_names_the_cell():
    # golden_worse: the same sgd cell (batch 64, 3 seeds) trained with a 100x smaller LR
    p = lbbench("compare", GOLDEN / "results_worse" / "golden", RESULTS)
    assert p.returncode == 1, p.stdout
    assert "sgd|64|torch" in p.stdout and "REGRESSED" in p.stdout and "no longer reaches the target" in p.stdout
    assert "missing in new" in p.stdout  # cells the worse set does not have are listed
    # the other way round, the better set is no regression
    assert lbbench("compare", RESULTS, GOLDEN / "results_worse" / "golden").returncode == 0


@pytest.mark.slow
def test_ci_suite_matches_the_committed_baseline(tmp_path, digits_dir):
    if not BASELINE.exists():
        pytest.skip(f"no baseline for machine class {MACHINE} (see README: refreshing a baseline)")
    env = {"LBBENCH_DIGITS": str(digits_dir)}
    run = lbbench("run", ROOT / "suites" / "ci.yaml", "--results", tmp_path, env=env, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:]
    # images/s is not gated here: CI machines are shared. Tolerances absorb last-bit float
    # differences between CPUs of one class (+/- one evaluation, 5 points of top-1).
    p = lbbench("compare", tmp_path / "ci", BASELINE, "--epochs-tolerance", "0.5", "--top1-tolerance", "0.05")
    assert p.returncode == 0, p.stdout


def test_a_tuned_cell_is_gated_on_its_winner_not_on_its_trials(tmp_path):
    from lbbench.report.compare import cells_of
    from lbbench.suite import expand, load_suite

    from helpers import FAKE_SWEEP, fake_summary, write_suite

    spec = expand(load_suite(write_suite(tmp_path / "sweep.yaml", FAKE_SWEEP)))[0][0]
    for trial, epochs, top1 in ((0, 3, 0.91), (1, 2, 0.93), (2, None, 0.5)):
        t = spec.model_copy(update=dict(study=0, trial=trial, tuned={"lr.base_lr": 0.1 * (trial + 1)})).with_id()
        d = fake_summary(t, tmp_path, epochs * 32 if epochs else None, epochs_to_target=epochs, best_top1=top1)
        t.save(d / "run.yaml")
    (cell,) = cells_of(tmp_path / "sweep")["cells"].values()
    assert len(cell) == 1 and cell[0]["epochs_to_target"] == 2 and cell[0]["best_top1"] == 0.93

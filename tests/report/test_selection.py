"""Winner selection and AlgoPerf scoring of tuning studies, on hand-made result sets."""

from __future__ import annotations

import math

from lbbench.report.selection import algoperf_steps, markdown, tuning_rows, winner, winners_only


def _t(trial, status="success", steps=None, epochs=None, top1=0.96, study=0, batch=64, label="sgd"):
    return dict(
        run_id=f"{label}-{batch}-{study}.{trial}",
        label=label,
        method=label,
        global_batch=batch,
        framework="torch",
        status=status,
        steps_to_target=steps,
        epochs_to_target=epochs,
        best_top1=top1,
        study=study,
        trial=trial,
        tuned={"lr.base_lr": 0.1 * (trial + 1)},
    )


def test_fewest_steps_wins_then_fewer_epochs_then_higher_top1():
    trials = [_t(0, steps=90, epochs=4), _t(1, steps=72, epochs=3, top1=0.95), _t(2, steps=72, epochs=3, top1=0.97)]
    best, ok = winner(trials)
    assert ok and best["trial"] == 2
    trials.append(_t(3, steps=72, epochs=2, top1=0.951))
    assert winner(trials)[0]["trial"] == 3
    # a faster run that did not reach the target never wins
    trials.append(_t(4, status="not_reached", steps=None, top1=0.99))
    assert winner(trials)[0]["trial"] == 3


def test_no_trial_reaching_the_target_reports_the_best_top1_marked():
    best, ok = winner([_t(0, "not_reached", top1=0.5), _t(1, "diverged", top1=0.1), _t(2, "not_reached", top1=0.8)])
    assert not ok and best["trial"] == 2
    assert winner([_t(0, "failed")]) == (None, False)


def test_algoperf_median_over_studies_with_misses_infinite():
    studies = {
        0: [_t(0, steps=100), _t(1, steps=80)],
        1: [_t(0, steps=120, study=1)],
        2: [_t(0, "not_reached", study=2)],
    }
    assert algoperf_steps(studies) == 120.0  # median of 80, 120, inf
    assert math.isinf(algoperf_steps({0: [_t(0, "not_reached")], 1: [_t(0, "not_reached", study=1)]}))


def test_tuned_cells_show_their_winner_in_the_table():
    runs = [_t(0, steps=90, epochs=4), _t(1, steps=60, epochs=3), _t(0, "not_reached", batch=1536, top1=0.4)]
    plain = dict(_t(0, steps=50), trial=None, study=None, tuned=None, label="lars", method="lars", run_id="lars")
    rows = tuning_rows(runs + [plain])
    assert [(r["global_batch"], r["trials"], r["reached"], r["winner"]) for r in rows] == [
        (64, 2, 1 + 1, "0.1"),
        (1536, 1, 0, "0.0"),
    ]
    kept = winners_only(runs + [plain])
    assert sorted(r["run_id"] for r in kept) == ["lars", "sgd-1536-0.0", "sgd-64-0.1"]
    md = markdown(rows)
    assert "0.0 (not reached)" in md and "lr.base_lr=0.2" in md and "| inf |" in md


def test_final_seed_runs_replace_the_winning_trial_in_the_cells_row():
    trials = [_t(0, steps=90, epochs=4), _t(1, steps=60, epochs=3), _t(2, "not_reached")]
    finals = []
    for seed, steps in ((1, 66), (2, 54), (3, 72)):
        f = _t(1, steps=steps, epochs=3) | dict(run_id=f"sgd-64-final-{seed}", trial=None, study=None, seed=seed)
        finals.append(f | dict(final_of="0.1"))
    other = _t(0, steps=10, batch=128)  # another cell, no finals: its winner stays
    kept = winners_only(trials + finals + [other])
    assert sorted(r["run_id"] for r in kept) == ["sgd-128-0.0", "sgd-64-final-1", "sgd-64-final-2", "sgd-64-final-3"]
    (row,) = [r for r in tuning_rows(trials + finals) if r["global_batch"] == 64]
    assert row["trials"] == 3 and row["winner"] == "0.1" and row["steps_to_target"] == 60  # the trial's own
    assert row["final_runs"] == 3 and row["final_reached"] == 3
    assert row["final_steps"] == 66  # olympic mean of 54, 66, 72: the middle one
    assert row["trial_steps"] == "60-90"  # the spread over the trials that reached it
    assert "| 60-90 | 3 | 3 | 66.0 |" in markdown([row])

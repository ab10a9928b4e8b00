"""Suite schema, validation errors (file, line, field; exit 2; nothing written) and expansion."""

from __future__ import annotations

import textwrap

import pytest

from lbbench.suite import SuiteError, expand, load_suite

from helpers import ROOT, lbbench, write_suite

GOOD = textwrap.dedent("""\
    name: t
    workload:
      name: digits
      data: {kind: synthetic, train_samples: 1024, eval_samples: 128}
    lr: {rule: linear, base_lr: 0.1, base_batch: 256}
    matrix:
      methods:
        - name: sgd
          hparams: {momentum: 0.9}
      global_batch: [64, 256]
      seeds: [0, 1]
      workers: [2]
    """)


def test_expansion_counts_and_ids(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", GOOD))
    runs, warnings = expand(suite)
    assert warnings == []
    assert [(r.global_batch, r.seed) for r in runs] == [(64, 0), (64, 1), (256, 0), (256, 1)]
    assert len({r.run_id for r in runs}) == 4
    r = runs[2]
    assert (r.np, r.local_batch, r.accum, r.bn_span) == (2, 128, 1, 128)
    assert r.lr.peak_lr == pytest.approx(0.1)
    assert r.hparams == {
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "exclude_bn_bias": True,
        "lr_convention": "outside",
    }
    # ids are content-derived: same suite, same ids; a changed hyperparameter, a new id
    assert [x.run_id for x in expand(load_suite(tmp_path / "s.yaml"))[0]] == [x.run_id for x in runs]
    changed = write_suite(tmp_path / "c.yaml", GOOD.replace("momentum: 0.9", "momentum: 0.8"))
    assert expand(load_suite(changed))[0][0].run_id != runs[0].run_id


def test_local_batch_gives_accumulation_and_bn_span(tmp_path):
    text = GOOD.replace("workers: [2]", "workers: [2]\n  local_batch: 16\n  bn_span: 8")
    runs, _ = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    assert [(r.local_batch, r.accum, r.bn_span, r.virtual_workers) for r in runs[::2]] == [
        (16, 2, 8, 4),
        (16, 8, 8, 16),
    ]


def test_include_exclude(tmp_path):
    text = GOOD + "exclude:\n  - {global_batch: 64, seed: 1}\ninclude:\n  - {global_batch: 512, seed: 7}\n"
    runs, _ = expand(load_suite(write_suite(tmp_path / "s.yaml", text)))
    assert [(r.global_batch, r.seed) for r in runs] == [(64, 0), (256, 0), (256, 1), (512, 7)]


BAD = [
    # (replace this, with that, expected line, expected field, message fragment)
    ("  seeds: [0, 1]\n", "  seeds: [0, 1]\n  seedz: [3]\n", 12, "matrix.seedz", "unknown key"),
    ("- name: sgd", "- name: sgdd", 8, "matrix.methods[0].name", "unknown method 'sgdd'"),
    (
        "hparams: {momentum: 0.9}",
        "hparams: {momentun: 0.9}",
        9,
        "matrix.methods[0].hparams.momentun",
        "unknown hyperparameter",
    ),
    (
        "global_batch: [64, 256]",
        "global_batch: [64, 255]",
        10,
        "matrix.global_batch[1]",
        "not divisible by np x accum = 2 x 1",
    ),
    (
        "{kind: synthetic, train_samples: 1024, eval_samples: 128}",
        "{kind: folder, path: /nonexistent/imagenet}",
        4,
        "workload.data.path",
        "does not exist",
    ),
    ("lr: {rule: linear", "lr: {rule: linear: x", 5, "", "bad YAML syntax"),
    ("base_lr: 0.1,", "base_lr: fast,", 5, "lr.base_lr", "valid number"),
    # once planned and launched: a negative LR, then a DALI error (a negative batch), a
    # ZeroDivisionError (0), "matrix: required field is missing" (the typo), 0 runs with exit 0
    ("global_batch: [64, 256]", "global_batch: [-64, 256]", 10, "matrix.global_batch[0]", "greater than 0"),
    ("global_batch: [64, 256]", "global_batch: [64, 0]", 10, "matrix.global_batch[1]", "greater than 0"),
    ("workers: [2]", "workers: [0]", 12, "matrix.workers[0]", "greater than 0"),
    ("matrix:\n", "matirx:\n", 6, "matirx", "unknown key; did you mean 'matrix'?"),
    (
        "  workers: [2]\n",
        "  workers: [2]\nexclude: [{global_batch: 64}, {global_batch: 256}]\n",
        13,
        "exclude",
        "no runs",
    ),
]


@pytest.mark.parametrize("old,new,line,field,fragment", BAD, ids=[b[3] or "syntax" for b in BAD])
def test_bad_input_names_file_line_field(tmp_path, old, new, line, field, fragment):
    assert old in GOOD
    path = write_suite(tmp_path / "bad.yaml", GOOD.replace(old, new))
    with pytest.raises(SuiteError) as e:
        expand(load_suite(path), check_data=True)
    assert (e.value.line, e.value.field) == (line, field), str(e.value)
    assert fragment in str(e.value)
    # the CLI: exit status 2, the location in the message, nothing written
    results = tmp_path / "results"
    p = lbbench("run", path, "--results", results)
    assert p.returncode == 2, p.stderr
    assert f"bad.yaml:{line}" in p.stderr and fragment in p.stderr.replace("\n", "")
    assert not results.exists()


def test_non_utf8_suite_names_line_and_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("name: t", "name: t\ndescription: caf\xe9").encode("latin-1"))
    p = lbbench("plan", path)
    assert p.returncode == 2
    assert "latin1.yaml:2: not UTF-8 text (byte 0xe9" in p.stderr


def test_cli_values_name_the_option_not_a_suite_line(tmp_path):
    path = write_suite(tmp_path / "s.yaml", GOOD)
    p = lbbench("run", path, "--np", "0", "--results", tmp_path / "r")
    assert p.returncode == 2
    assert "'--np'" in p.stderr and "s.yaml:" not in p.stderr
    assert not (tmp_path / "r").exists()


def test_missing_env_var_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LBBENCH_NO_SUCH_VAR", raising=False)
    text = GOOD.replace(
        "{kind: synthetic, train_samples: 1024, eval_samples: 128}", "{kind: folder, path: '${LBBENCH_NO_SUCH_VAR}'}"
    )
    with pytest.raises(SuiteError, match="LBBENCH_NO_SUCH_VAR is not set"):
        expand(load_suite(write_suite(tmp_path / "s.yaml", text)), check_data=True)


def test_imagenet_plan_lists_the_matrix():
    suite = load_suite(ROOT / "suites" / "imagenet.yaml")
    runs, _ = expand(suite)  # plan works without the data (warns instead)
    batches = sorted({r.global_batch for r in runs})
    assert batches == [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
    fixed = {r.label for r in runs if r.trial is None}
    tuned = {r.label for r in runs if r.trial is not None}
    assert tuned == {"nesterov_tuned", "adamw_tuned"} and not fixed & tuned
    assert {r.framework for r in runs} == {"torch", "tf"}
    assert {r.framework for r in runs if r.label in tuned} == {"torch"}  # studies on one backend
    trials = 5  # per cell; final seeds come once a cell's trials are done
    assert len(runs) == len(batches) * (len(fixed) * 2 + len(tuned) * trials) * len(suite.cfg.matrix.seeds)
    assert all(r.model == "resnet50" and r.target_top1 == 0.759 and r.eval_every == 4 for r in runs)
    assert all(r.data.train_samples == 1_281_167 and r.data.eval_samples == 50_000 for r in runs)
    p = lbbench("plan", ROOT / "suites" / "imagenet.yaml", env={"IMAGENET_DIR": ""})
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("-b131072-") == len(fixed) * 2 + len(tuned) * trials


# AlgoPerf's paper-baseline search spaces (reference_algorithms/paper_baselines/{nesterov,adamw}/
# tuning_search_space.json in mlcommons/algorithmic-efficiency), written out here from the
# published files, independently of the suite: (low, high) of each range, or the fixed points.
ALGOPERF = {
    "nesterov_tuned": {
        "learning_rate": (2e-2, 5.0),
        "one_minus_beta1": (5e-3, 0.3),
        "weight_decay": (1e-7, 5e-5),
        "label_smoothing": {0.1, 0.2},
        "end_factor": {1e-3, 1e-2},
    },
    "adamw_tuned": {
        "learning_rate": (1e-4, 1e-2),
        "one_minus_beta1": (2e-2, 0.5),
        "weight_decay": (5e-3, 1.0),
        "label_smoothing": {0.1, 0.2},
    },
}


def test_imagenet_tuned_rows_search_algoperfs_spaces():
    runs, _ = expand(load_suite(ROOT / "suites" / "imagenet.yaml"))
    for label, space in ALGOPERF.items():
        rs = [r for r in runs if r.label == label and r.global_batch == 32768]
        assert len(rs) == 5
        for r in rs:
            lo, hi = space["learning_rate"]
            assert lo <= r.lr.peak_lr <= hi  # the same absolute range at every batch size
            beta1 = r.hparams["momentum" if label == "nesterov_tuned" else "beta1"]
            lo, hi = space["one_minus_beta1"]
            assert lo <= 1 - beta1 <= hi
            lo, hi = space["weight_decay"]
            assert lo <= r.hparams["weight_decay"] <= hi
            assert r.label_smoothing in space["label_smoothing"]
            assert r.hparams["exclude_bn_bias"] is False  # the submissions decay every tensor
            # warmup_factor 0.05 of the 90-epoch budget, from 0
            assert (r.lr.warmup_epochs, r.lr.warmup_start_lr, r.max_epochs) == (4.5, 0.0, 90)
            if label == "nesterov_tuned":
                assert r.hparams["nesterov"] is True and r.method == "sgd"
                # linear decay (power 1) to end_factor x peak over decay_steps_factor 0.9 of the rest
                assert (r.lr.schedule, r.lr.poly_power) == ("poly", 1.0)
                assert r.lr.end_lr / r.lr.peak_lr == pytest.approx(
                    min(space["end_factor"], key=lambda f: abs(f - r.lr.end_lr / r.lr.peak_lr))
                )
                assert r.lr.train_epochs == pytest.approx(4.5 + 0.9 * (90 - 4.5))
            else:
                assert r.method == "adamw" and (r.hparams["beta2"], r.hparams["eps"]) == (0.999, 1e-8)
                assert (r.lr.schedule, r.lr.end_lr, r.lr.train_epochs) == ("cosine", 0.0, 90)


def test_demo_suite_expands(env_digits):
    runs, _ = expand(load_suite(ROOT / "suites" / "demo.yaml"), check_data=True)
    assert len({r.global_batch for r in runs}) >= 4
    assert max(r.global_batch for r in runs) == runs[0].data.train_samples == 1536  # full batch
    assert all(r.np == 2 for r in runs)

"""`lbbench data synthetic-jpeg` and `lbbench bench input`: real JPEGs, a real DALI pipeline,
a JSON record per thread count; bad options exit 2."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from helpers import lbbench


def test_synthetic_jpegs_then_the_input_benchmark(tmp_path):
    data = tmp_path / "sj"
    p = lbbench("data", "synthetic-jpeg", "--out", data, "--classes", "2", "--per-class", "6", "--width", "80")
    assert p.returncode == 0, p.stderr
    files = sorted((data / "train").rglob("*.JPEG"))
    assert len(files) == 12 and {f.parent.name for f in files} == {"n00000000", "n00000001"}
    assert not (data / "val").exists()  # no --val-per-class: train/ only
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (80, 375)
    out = tmp_path / "input.json"
    for augment, decode in (
        ("imagenet", "roi,roi-fed,first-epoch,full,reference,reference-same"),
        ("none", "roi,full"),
    ):
        p = lbbench(
            "bench", "input", data, "--batch", "4", "--size", "32", "--threads", "1,2", "--batches", "2",
            "--rounds", "1", "--augment", augment, "--decode", decode, "--out", out,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        res = json.loads(out.read_text())
        keys = {f"{d}/{n}" for d in decode.split(",") for n in (1, 2)}
        assert res["augment"] == augment and set(res["results"]) == keys
        assert all(r["images_per_s"] > 0 for r in res["results"].values())
        assert res["results"]["roi/1"]["relative_to_first"] == 1.0


def test_the_same_work_reference_makes_the_training_pipelines_images(tmp_path):
    """ "reference-same" is a fair yardstick only if it does the same work: DALI's file reader
    over the files the sampler chose must give, batch by batch, the training pipeline's crops,
    flips and labels."""
    from lbbench.backends import dali_bench
    from lbbench.backends import dali_pipeline as dp

    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        f = tmp_path / f"{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (48 + 3 * i, 64, 3), dtype=np.uint8)).save(f, quality=90)
        paths.append(str(f))
    labels = np.arange(10) % 3
    chosen = [rng.permutation(10)[:4] for _ in range(6)]
    order = np.concatenate(chosen)
    ours = dp.pipeline(dp.FileBatches(dp.Files(paths, labels), iter(chosen)), 4, 32, True, "imagenet", 5, None)
    ref = dali_bench.same_work_reference([paths[i] for i in order], labels[order].tolist(), 4, 32, seed=5)
    other_seed = dali_bench.same_work_reference([paths[i] for i in order], labels[order].tolist(), 4, 32, seed=6)
    for _ in range(3):
        (x, y), (rx, ry), (ox, _) = ours.run(), ref.run(), other_seed.run()
        x, rx, ox = (np.array(t.as_tensor()) for t in (x, rx, ox))
        assert np.array_equal(x, rx) and np.array_equal(np.array(y.as_tensor()), np.array(ry.as_tensor()))
        assert not np.array_equal(x, ox)  # the seed decides the crops: equality above is not vacuous


def test_bad_input_benchmark_options_exit_2(tmp_path):
    assert lbbench("bench", "input", tmp_path / "missing").returncode == 2
    (tmp_path / "d" / "train").mkdir(parents=True)
    assert lbbench("bench", "input", tmp_path / "d", "--threads", "0").returncode == 2
    assert lbbench("bench", "input", tmp_path / "d", "--augment", "weird").returncode == 2
    assert lbbench("bench", "input", tmp_path / "d", "--decode", "gpu").returncode == 2

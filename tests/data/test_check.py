"""Damaged images are named: by `lbbench data check`, and by a run that meets one (a corrupt
PNG made rank 0 die by SIGSEGV, "worker exited with status 245", or DALI say
"nvImageCodec failure: '#4'", naming no file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lbbench.data.check import UndecodableImage, decode_problem, header_problem, structural_problem
from lbbench.data.layout import FINGERPRINT_CACHE
from lbbench.launch.runner import exit_reason, named_error

from helpers import lbbench, write_suite

SUITE = """
name: damaged
workload: {{name: digits, model: resnet_tiny, data: {{kind: folder, path: "{data}"}}, max_epochs: 1}}
lr: {{rule: linear, base_lr: 0.1, base_batch: 256}}
matrix: {{methods: [{{name: sgd}}], global_batch: [256], workers: [2], frameworks: [{fw}]}}
"""


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _garble_pixels(path: Path) -> None:
    """Header and end intact, the compressed pixels garbage: only a decoder notices."""
    b = bytearray(path.read_bytes())
    b[45:-20] = bytes([0x55]) * (len(b) - 65)
    path.write_bytes(bytes(b))


@pytest.fixture
def damaged(digits_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(digits_dir, out, ignore=shutil.ignore_patterns(FINGERPRINT_CACHE))
    return out


def test_structural_and_header_checks():
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 100 + b"IEND\xaeB`\x82"
    assert structural_problem(png) is None
    assert "truncated PNG" in structural_problem(png[:50])
    assert "truncated JPEG" in structural_problem(b"\xff\xd8\xff\xe0" + b"x" * 100)
    assert structural_problem(b"") == "empty file"
    assert structural_problem(b"BM" + b"x" * 10) is None  # other formats pass the cheap check
    assert header_problem(png)  # a PNG signature, not a PNG header
    assert "identify" in header_problem(b"not an image")


def test_data_check_names_every_bad_file(damaged):
    a = sorted((damaged / "val" / "03").iterdir())[0]
    b = sorted((damaged / "train" / "07").iterdir())[2]
    _truncate(a)
    _garble_pixels(b)
    assert decode_problem(a) and decode_problem(b)
    p = lbbench("data", "check", damaged, "--workers", "2")
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{a}: truncated PNG" in p.stdout and f"{b}: " in p.stdout
    assert "1797 images checked, 2 damaged" in p.stdout
    ok = lbbench("data", "check", damaged / "val" / "05")
    assert ok.returncode == 0 and "0 damaged" in ok.stdout


def test_signal_exits_are_named_whatever_the_launcher():
    assert "SIGSEGV" in exit_reason(245) and "lbbench data check" in exit_reason(245)  # mpirun: 256 - 11
    assert "SIGKILL" in exit_reason(247) and "SIGKILL" in exit_reason(-9) and "SIGTERM" in exit_reason(143)
    assert exit_reason(1) == "worker exited with status 1"
    lines = ["noise", "[1]<stderr>:lbbench: error: cannot decode /d/x.png: truncated PNG", "later"]
    assert named_error(lines) == "cannot decode /d/x.png: truncated PNG"


@pytest.mark.slow
@pytest.mark.parametrize("fw", ["torch", "tf"])
@pytest.mark.parametrize("damage,split", [(_truncate, "val"), (_garble_pixels, "train")], ids=["truncated", "pixels"])
def test_a_run_fails_naming_the_damaged_file(damaged, tmp_path, fw, damage, split):
    victim = sorted((damaged / split / "04").iterdir())[1]
    damage(victim)
    suite = write_suite(tmp_path / "s.yaml", SUITE.format(data=damaged, fw=fw))
    p = lbbench("run", suite, "--results", tmp_path / "r", timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    (summary,) = (tmp_path / "r").rglob("summary.json")
    doc = json.loads(summary.read_text())
    assert doc["status"] == "failed"
    assert doc["reason"].startswith(f"cannot decode {victim}: "), doc["reason"]


def test_the_error_carries_the_path():
    e = UndecodableImage("/data/train/n01/x.JPEG", "truncated JPEG (no end-of-image marker)")
    assert str(e) == "cannot decode /data/train/n01/x.JPEG: truncated JPEG (no end-of-image marker)"

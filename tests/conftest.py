from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    from lbbench.digits import write_digits
    out = tmp_path_factory.mktemp("data") / "digits"
    write_digits(out)
    return out


@pytest.fixture
def env_digits(digits_dir, monkeypatch):
    monkeypatch.setenv("LBBENCH_DIGITS", str(digits_dir))
    return digits_dir


def lbbench(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lbbench"), *map(str, args)], cwd=cwd or ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "COLUMNS": "200"}, timeout=timeout)


def write_suite(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

"""`lbbench bench optim`: every method's full training-step time relative to SGD, measured by
the PyTorch backend's bench (lbbench/backends/torch/bench.py) in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run(model: str, batch: int, steps: int, methods: str | None, out: Path) -> tuple[int, dict[str, Any] | None]:
    """(exit status, the result written to ``out``)."""
    cmd = [
        sys.executable,
        "-m",
        "lbbench.backends.torch.bench",
        "optim",
        "--model",
        model,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--out",
        str(out),
    ] + (["--methods", methods] if methods else [])
    rc = subprocess.call(cmd)
    return rc, (json.loads(out.read_text()) if rc == 0 else None)

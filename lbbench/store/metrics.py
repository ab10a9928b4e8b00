"""metrics.jsonl: one JSON object per line - "step", "epoch" and "diag" rows (framework-free:
both backends' workers write them through the shared driver, the runner and the report read them)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON object per line, flushed, so `lbbench run` can show live progress."""

    def __init__(self, path: Path | None):
        self.f = open(path, "a") if path is not None else None

    def write(self, kind: str, **row: Any) -> None:
        if self.f is not None:
            self.f.write(json.dumps({"kind": kind, "t": round(time.time(), 3), **row}) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        for line in Path(path).read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written right now
    except OSError:
        pass
    return rows

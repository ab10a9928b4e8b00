"""YAML loading that remembers where every key and item came from.

Validation errors must name the file, the line and the field; pydantic knows the field path
but not the line, so we compose the YAML once, keep a map {field path: line}, and look the
line up by the longest known prefix of an error's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class SuiteError(Exception):
    """A malformed suite: carries file, line and field so the CLI can say where."""

    def __init__(self, file: str | Path, line: int | None, field: str, message: str):
        self.file, self.line, self.field, self.message = str(file), line, field, message
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


Path_ = tuple[Any, ...]


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            if key in out:
                raise SuiteError("", key_node.start_mark.line + 1, _fmt(path + (key,)), "duplicate key")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(child, path + (i,), lines) for i, child in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def load_with_lines(file: Path) -> tuple[Any, dict[Path_, int]]:
    try:
        data = file.read_bytes()
    except OSError as e:
        raise SuiteError(file, None, "", f"cannot read suite: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SuiteError(
            file, line, "", f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the suite as UTF-8"
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SuiteError(
            file, mark.line + 1 if mark else None, "", f"bad YAML syntax: {getattr(e, 'problem', e)}"
        ) from None
    if node is None:
        raise SuiteError(file, 1, "", "empty suite")
    lines: dict[Path_, int] = {}
    try:
        return _walk(node, (), lines), lines
    except SuiteError as e:
        raise SuiteError(file, e.line, e.field, e.message) from None


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in lines:
            return lines[tuple(path[:n])]
    return None


def _fmt(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


fmt_path = _fmt

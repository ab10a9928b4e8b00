"""summary.json is typed: what the driver and the runner write validates; anything else - random
bytes, a JSON list, a missing or mistyped field - is a damaged summary naming its file, and
the readers (report, status, compare, export) go on without it."""

from __future__ import annotations

import json
import shutil

import pytest

from lbbench.store.files import iter_run_dirs
from lbbench.store.summary import RunSummary, SummaryDamaged, is_done, read_summary, summary_or_damage

from helpers import RESULTS, lbbench

DAMAGE = {
    "random bytes": b"\x8f\x00\xffnot json at all\xfe",
    "a JSON list": b"[1, 2, 3]",
    "truncated JSON": b'{"run_id": "x", "status": "succ',
    "a missing field": json.dumps({"run_id": "x", "status": "success"}).encode(),
    "a wrong type": None,  # filled below from a real summary
    "an unknown status": None,
}


def test_every_golden_summary_validates():
    found = [read_summary(d) for d in iter_run_dirs(RESULTS)]
    assert len(found) >= 9 and all(isinstance(s, RunSummary) for s in found if s is not None)


def test_round_trip(tmp_path):
    rdir = next(iter_run_dirs(RESULTS))
    s = read_summary(rdir)
    assert s is not None
    s.write(tmp_path)
    assert read_summary(tmp_path) == s


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_summaries_are_named_never_trusted(kind, tmp_path):
    good = json.loads(next(RESULTS.glob("sgd-b64-*/summary.json")).read_text())
    raw = DAMAGE[kind]
    if kind == "a wrong type":
        raw = json.dumps({**good, "global_batch": "sixty-four"}).encode()
    elif kind == "an unknown status":
        raw = json.dumps({**good, "status": "great"}).encode()
    (tmp_path / "summary.json").write_bytes(raw)
    with pytest.raises(SummaryDamaged) as e:
        read_summary(tmp_path)
    assert str(tmp_path / "summary.json") in str(e.value)
    assert summary_or_damage(tmp_path)[0] is None and not is_done(tmp_path)


def test_report_lists_a_damaged_run_and_goes_on(tmp_path):
    res = tmp_path / "golden"
    shutil.copytree(RESULTS, res)
    victim = next(res.glob("sgd-b64-*-s1-*"))
    (victim / "summary.json").write_bytes(b"\x00\x01garbage")
    broken_spec = next(res.glob("lars-b64-*-s2-*"))
    (broken_spec / "run.yaml").write_text("")
    p = lbbench("report", res)
    assert p.returncode == 0, p.stderr
    assert "1 damaged" in p.stdout and f"{victim / 'summary.json'}: damaged summary (not JSON" in p.stderr
    assert f"{broken_spec / 'run.yaml'}: unreadable" in p.stderr
    assert "| sgd | 64 | torch |" in p.stdout  # the rest of the cell and the table are there

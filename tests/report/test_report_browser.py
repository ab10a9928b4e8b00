"""The HTML report in a real browser: headless Chromium (Debian's package, installed by
tools/headless_chromium.sh) loads report.html at 1,400 px, opens every collapsed section, and
the page must not overflow the viewport sideways and every embedded figure must decode."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from lbbench.report.build import build

from helpers import RESULTS, ROOT, write_fake_sweep

SCRIPT = ROOT / "tools" / "headless_chromium.sh"
PROBE = """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const imgs = [...document.images];
  const root = document.documentElement;
  // sort every run's row by global batch: one click ascending, a second descending
  const t = document.querySelector('details table.sortable');
  const ths = [...t.querySelectorAll('th')], i = ths.findIndex(h => h.textContent === 'global_batch');
  const col = () => [...t.tBodies[0].rows].map(r => parseFloat(r.cells[i].textContent.replace(/,/g, '')));
  const before = col();
  ths[i].click(); const asc = col(); ths[i].click(); const desc = col();
  document.body.setAttribute('data-probe', JSON.stringify({
    sort: {before, asc, desc},
    images: imgs.length,
    undecoded: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    scroll_width: root.scrollWidth,
    viewport: window.innerWidth,
  }));
});
</script>"""


@pytest.fixture(scope="module")
def chromium():
    p = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=1200)
    if p.returncode == 3:
        pytest.skip(f"no Chromium can be installed here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def _probe(chromium: str, page, width: int) -> dict:
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    p = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={width},900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    m = re.search(r'data-probe="([^"]*)"', p.stdout)
    assert m, p.stderr[-2000:]
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.slow
def test_the_report_fits_the_window_and_every_figure_decodes(chromium, tmp_path):
    results = tmp_path / "golden"
    shutil.copytree(RESULTS, results)
    write_fake_sweep(results)  # a batch sweep too: the scaling section and its figure
    out = build(results)
    assert out["scaling"] and out["figures"][0]["file"] == "steps_to_result.png"
    probe = _probe(chromium, results / "report.html", 1400)
    assert probe["images"] == len(out["figures"]) and probe["undecoded"] == [], probe
    assert probe["scroll_width"] <= probe["viewport"], probe  # nothing wider than the window
    sort = probe["sort"]  # a click on a header sorts the rows, a second click reverses them
    assert sort["asc"] == sorted(sort["before"]) and sort["desc"] == sorted(sort["before"], reverse=True), sort
    assert sort["asc"] != sort["before"] or sort["desc"] != sort["before"]  # the clicks did something

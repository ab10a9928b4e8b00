"""`lbbench report`: tables, figures and a short text per method, from a results directory
alone (summary.json, metrics.jsonl, run.yaml of every run under it)."""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from lbbench.report import plots, scaling, selection
from lbbench.report.tables import (
    COLUMNS,
    OWN,
    TIME_PARTS,
    _fmt,
    collect,
    markdown,
    rows,
    time_markdown,
    time_rows,
    to_csv,
)
from lbbench.spec import RunSpec
from lbbench.store.files import atomic_write_text, iter_run_dirs
from lbbench.store.metrics import read_metrics
from lbbench.store.summary import RunSummary, summary_or_damage

PERFECT = 0.8  # "perfect scaling" regime: steps x B within 80% of the smallest batch's


def method_summaries(table: list[dict[str, Any]]) -> dict[str, str]:
    """Per method: the largest batch that reached the target, and where it leaves perfect scaling."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    frameworks: dict[str, set[str]] = defaultdict(set)
    for r in table:
        frameworks[r["method"]].add(r["framework"])
    for r in table:  # one text per method, per framework where a method ran on several
        by[r["method"] if len(frameworks[r["method"]]) == 1 else f"{r['method']} ({r['framework']})"].append(r)
    out = {}
    for method, cells in sorted(by.items()):
        reached = sorted(c["global_batch"] for c in cells if c["steps_to_target"] is not None)
        if not reached:
            out[method] = "reached the target at no batch size."
            continue
        text = f"largest batch reaching the target: {reached[-1]:,}"
        steps = {c["global_batch"]: c["steps_to_target"] for c in cells if c["steps_to_target"] is not None}
        b0 = reached[0]
        leaves = next((b for b in reached[1:] if steps[b0] * b0 / (steps[b] * b) < PERFECT), None)
        if len(reached) == 1:
            text += " (one batch size reached it: no scaling to judge)."
        elif leaves is None:
            text += f"; within {PERFECT:.0%} of perfect scaling up to {reached[-1]:,} (from {b0:,})."
        else:
            text += f"; leaves perfect scaling at {leaves:,} (steps x batch > {1 / PERFECT:.2f}x that at {b0:,})."
        out[method] = text
    return out


def build(results: Path, formats: tuple[str, ...] = ("md", "csv", "html")) -> dict[str, Any]:
    results = Path(results)
    summaries = collect(results)
    tuned = selection.tuning_rows(summaries)
    kept = selection.winners_only(summaries)  # a tuned cell's row is its winning trial (or finals)
    table = rows(kept)
    figdir = results / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    winners = {s["run_id"] for s in kept}
    noise_parts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    figures = _figures(results, table, figdir, winners, noise_parts) if summaries else []
    sweep = scaling.scalings([r | {"key": _key(r)} for r in table], noise_parts)
    if any(len(sc.steps) > 1 for sc in sweep):  # the answer first: Shallue et al.'s figure
        figures.insert(0, plots.steps_to_result(sweep, figdir))
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in selection.studies(summaries):  # every trial of every tuned cell, per method
        by_method[f"{c.method} ({c.framework})"] += c.trials
    figures += [plots.sensitivity(m, trials, figdir) for m, trials in sorted(by_method.items())]
    # the best steps as a method x batch grid, then the analysis per method
    scaling_tables = [scaling.steps_markdown(sweep), scaling.markdown(sweep)] if any(sc.steps for sc in sweep) else []
    texts = method_summaries(table)
    times = time_rows(summaries)
    if times:  # the decomposition drawn as stacked bars; the numbers stay in a table below
        figures.append(plots.time_breakdown(times, TIME_PARTS, figdir))
    damaged = [f"{s['run_id']}: {s['reason']}" for s in summaries if s["status"] == "damaged"]
    written = []
    if "md" in formats:
        md = [f"# lbbench report: {results.name}", ""]
        if scaling_tables:
            md += ["## Scaling: steps to result", "", "Best steps to target:", "", scaling_tables[0]]
            md += [SCALING_HELP, "", scaling_tables[1]]
            md += [f"![{f['title']}](figures/{f['file']})" for f in figures[:1] if f["file"] == "steps_to_result.png"]
            md += [""]
        md += ["## Cells", "", markdown(table)]
        if tuned:
            md += [
                "## Tuning studies",
                "",
                "Per cell: trials run and reaching the target, the winner (fewest steps to target; "
                "ties: fewer epochs, then higher top-1) with its sampled values, and AlgoPerf's "
                "median over studies of the fastest trial (a study that never reached it: inf). "
                "The table above shows each tuned cell's winning trial, or where the winner was re-run with "
                "final seeds (final_runs), those runs' olympic mean; trial_steps is the spread over the trials.",
                "",
                selection.markdown(tuned),
            ]
        if damaged:
            md += ["## Damaged runs (left out of every figure; `lbbench run` redoes them)", ""]
            md += [f"- {d}" for d in damaged] + [""]
        if times:
            md += [
                "## Where the time goes",
                "",
                "Shares of the summed step-time parts (data wait, forward+backward, "
                "allreduce, optimizer, other step work, epoch overhead, evaluation); compute images/s counts "
                "forward+backward only.",
                "",
                time_markdown(times),
            ]
        md += ["## Methods", ""]
        md += [f"- **{m}**: {t}" for m, t in texts.items()] + [""]
        md += [f"![{f['title']}](figures/{f['file']})" for f in figures if f["file"] != "steps_to_result.png"]
        atomic_write_text(results / "report.md", "\n".join(md) + "\n")
        written.append(results / "report.md")
    if "csv" in formats:
        atomic_write_text(results / "report.csv", to_csv(table))
        written.append(results / "report.csv")
    if "html" in formats:
        atomic_write_text(
            results / "report.html",
            _html(
                results.name,
                table,
                texts,
                figures,
                figdir,
                time_markdown(times) if times else "",
                scaling_tables,
                selection.markdown(tuned) if tuned else "",
            ),
        )
        written.append(results / "report.html")
    atomic_write_text(figdir / "figures.json", json.dumps(figures, indent=1))
    return dict(
        table=table,
        texts=texts,
        figures=figures,
        written=written,
        times=times,
        damaged=damaged,
        tuning=tuned,
        scaling=sweep,
    )


SCALING_HELP = (
    "Per method, from the best steps to the target at each global batch: the largest batch up to "
    f"which the samples to target stay within {scaling.SLACK}x the smallest batch's (perfect "
    f"scaling), the knee (the first batch needing more than {scaling.SLACK}x the method's fewest "
    "samples), the largest batch reaching the target (batches that missed it in brackets), and "
    "the critical batch two ways: B_noise fitted to the measured steps as S = S_min (1 + B_noise/B) "
    "(McCandlish et al. 2018; three or more batches) and B_simple, the gradient-noise scale the "
    "workers measured (its winners' runs, pooled)."
)


def _key(r: dict[str, Any]) -> str:
    """A table row's method key in the figures and the scaling table."""
    return f"{r['method']} ({r['framework']})" + ("" if r["source"] == OWN else f" [{r['source']}]")


def _figures(
    results: Path,
    table: list[dict[str, Any]],
    figdir: Path,
    winners: set[str],
    noise_parts: dict[str, list[tuple[float, float]]],
) -> list[dict[str, Any]]:
    """The report's figures; fills ``noise_parts`` (method key -> the gradient-noise parts its
    winning runs logged) on the way."""
    from lbbench.mlperf.rcps import mlperf_rcps

    curves: dict[str, dict[int, list[tuple[int, float]]]] = defaultdict(dict)
    noise: dict[str, list[tuple[int, float]]] = defaultdict(list)
    ips_np: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    target, train_samples = None, None
    for rdir in iter_run_dirs(results):
        s, _ = summary_or_damage(rdir)
        cell = _cell(rdir, s)
        if cell is None:
            continue
        label, B, framework, n, run_target, run_train = cell
        key = f"{label} ({framework})"
        if run_train is not None:  # an imported MLPerf run sets neither (it is ImageNet)
            target, train_samples = run_target, run_train
        rows_ = read_metrics(rdir / "metrics.jsonl")
        if framework != "torch":  # side by side with the PyTorch series of the method
            label = f"{label} ({framework})"
        pts = [(r["epoch"], r["top1"]) for r in rows_ if r["kind"] == "epoch" and r.get("top1") is not None]
        if pts and B not in curves[label]:
            curves[label][B] = pts
        diag = [r for r in rows_ if r["kind"] == "diag" and r.get("noise_g2")]
        if rdir.name in winners:
            noise_parts[key] += [(r["noise_g2"], r["noise_trace"]) for r in diag]
        if f"{label} B={B}" in noise:
            diag = []  # first seed only, as for the top-1 curves
        g2 = tr = 0.0
        for r in diag:  # running sums of both parts (unbiased each), then the ratio
            g2, tr = g2 + r["noise_g2"], tr + r["noise_trace"]
            if g2 > 0 and tr > 0:
                noise[f"{label} B={B}"].append((r["step"], tr / g2))
        if s is not None and s.images_per_s:
            ips_np[label][n].append(s.images_per_s)
    if train_samples is None and any(r["source"] != OWN for r in table):
        from lbbench.mlperf.importer import IMAGENET_TRAIN, TARGETS

        train_samples, target = IMAGENET_TRAIN, TARGETS["resnet"]  # only published MLPerf runs
    figs = plots.top1_curves(curves, target or 0.0, figdir)
    per: dict[str, dict[str, dict[int, float]]] = {
        w: defaultdict(dict) for w in ("epochs_to_target", "steps_to_target", "time_to_target_s")
    }
    ips_b: dict[str, dict[int, float]] = defaultdict(dict)
    for r in table:
        key = _key(r)
        for w in per:
            if r[w] is not None:
                per[w][key][r["global_batch"]] = r[w]
        if r["samples_to_target"] is not None and train_samples:
            # MLPerf's epochs are N samples; lbbench's are ceil(N / B) x B (up to +2.3% at 131,072):
            # beside MLPerf's reference points, the epochs are the samples seen / N
            per["epochs_to_target"][key][r["global_batch"]] = r["samples_to_target"] / train_samples
        if r["images_per_s"]:
            ips_b[key][r["global_batch"]] = r["images_per_s"]
    rcp = mlperf_rcps()
    for w in per:
        figs.append(plots.to_target_vs_batch(per[w], w, figdir, rcp, train_samples))
    figs.append(plots.throughput(ips_b, "global batch", figdir, "images_per_s_vs_batch"))
    if any(len(v) > 1 for v in ips_np.values()):
        figs.append(
            plots.throughput(
                {m: {n: sum(v) / len(v) for n, v in by.items()} for m, by in ips_np.items()},
                "workers (np)",
                figdir,
                "images_per_s_vs_np",
            )
        )
    if noise:
        figs.append(plots.noise_scale(noise, figdir))
    return figs


def _cell(rdir: Path, s: RunSummary | None) -> tuple[str, int, str, int, float, int | None] | None:
    """(label, global batch, framework, np, target, training-set size) of a run: from its
    run.yaml, or - for a run imported from MLPerf - from its summary, marked as published."""
    from lbbench.mlperf.importer import is_published

    if is_published(rdir):
        if s is None:
            return None
        label = f"{s.label} [published {s.accelerators} x {s.accelerator}]"
        return label, s.global_batch, s.framework, s.np, s.target_top1, None
    try:
        spec = RunSpec.load(rdir / "run.yaml")
    except Exception:
        return None
    return spec.label, spec.global_batch, spec.framework, spec.np, spec.target_top1, spec.data.train_samples


def _md_table_html(md: str) -> str:
    lines = [ln.strip().strip("|").split("|") for ln in md.strip().splitlines()]
    return _table([c.strip() for c in lines[0]], [[c.strip() for c in ln] for ln in lines[2:]])


def _table(head: list[str], body: list[list[str]]) -> str:
    """A sortable table (a click on a column header sorts by it; SORT_JS) in its own scroll box."""
    th = "".join(f"<th title='sort'>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<div class='wide'><table class='sortable'><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table></div>"


# Click a header: sort the rows by that column, numbers as numbers ("1,536", "12.5%", "30 (256)"
# read as their leading number), text after numbers; a second click reverses. Inline, so the
# report stays one self-contained file.
SORT_JS = """<script>
document.querySelectorAll('table.sortable').forEach(t => t.querySelectorAll('th').forEach((th, i) => {
  th.style.cursor = 'pointer';
  th.addEventListener('click', () => {
    const body = t.tBodies[0], dir = th.dataset.dir === 'asc' ? -1 : 1;
    t.querySelectorAll('th').forEach(h => delete h.dataset.dir);
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    const key = r => { const s = r.cells[i].textContent.trim(), n = parseFloat(s.replace(/,/g, ''));
                       return isNaN(n) ? [1, s] : [0, n]; };
    [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
      return (x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0)) * dir; })
      .forEach(r => body.appendChild(r));
  });
}));
</script>"""


def _html(
    name: str,
    table: list[dict[str, Any]],
    texts: dict[str, str],
    figures: list[dict[str, Any]],
    figdir: Path,
    times_md: str = "",
    scaling_tables: list[str] | None = None,
    tuning_md: str = "",
) -> str:
    """The answer first (the scaling tables and Shallue's figure), a text per method, the
    figures, where the time goes (stacked bars); then the details collapsed: every run's row,
    the tuning studies and their per-trial strips, the time decomposition's numbers. Tables
    sort by a click on a header and scroll inside their own box instead of widening the page."""
    items = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(t)}</li>" for m, t in texts.items())

    def fig(f: dict[str, Any]) -> str:
        data = base64.b64encode((figdir / f["file"]).read_bytes()).decode()
        return (
            f'<figure><img alt="{html.escape(f["title"])}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(f['title'])}</figcaption></figure>"
        )

    def details(summary: str, inner: str) -> str:
        return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>" if inner else ""

    lead = [f for f in figures if f["file"] == "steps_to_result.png"]
    strips = [f for f in figures if f["file"].startswith("sensitivity_")]
    timing = [f for f in figures if f["file"] == "time_breakdown.png"]
    rest = "".join(fig(f) for f in figures if f not in lead + strips + timing)
    top = ""
    if scaling_tables:
        grid, analysis = scaling_tables
        top = (
            f"<h2>Scaling: steps to result</h2><p>Best steps to target:</p>{_md_table_html(grid)}"
            f"<p>{html.escape(SCALING_HELP)}</p>{_md_table_html(analysis)}" + "".join(fig(f) for f in lead)
        )
    cells = _table(list(COLUMNS), [[_fmt(c, r[c]) for c in COLUMNS] for r in table])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lbbench report: {html.escape(name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:100%}table{border-collapse:collapse;"
        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}"
        ".wide{overflow-x:auto;max-width:100%}figure{display:inline-block;margin:1em;max-width:100%}"
        "summary{cursor:pointer;font-weight:bold;margin:0.6em 0}"
        "img{max-width:100%;height:auto}</style></head><body>"
        f"<h1>lbbench report: {html.escape(name)}</h1>{top}<h2>Methods</h2><ul>{items}</ul>"
        f"<h2>Figures</h2>{rest}"
        + (f"<h2>Where the time goes</h2>{''.join(fig(f) for f in timing)}" if timing else "")
        + "<h2>Details</h2>"
        + details(f"Cells: every run's row ({len(table)})", cells)
        + details("Tuning studies", _md_table_html(tuning_md) if tuning_md else "")
        + details("Tuning sensitivity: every trial", "".join(fig(f) for f in strips))
        + details("Where the time goes: the numbers", _md_table_html(times_md) if times_md else "")
        + SORT_JS
        + "</body></html>"
    )

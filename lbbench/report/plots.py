"""Report figures (matplotlib, Agg): each function writes one PNG and returns what it drew
(title, axes labels and scales, series names) so tests can check content, not pixels."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from lbbench.spec import steps_per_epoch
from lbbench.workloads import WORKLOADS

IMAGENET_TRAIN = WORKLOADS["imagenet"].train_samples


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    # 20 distinct colours: a suite easily has more than the default cycle's 10 methods
    plt.rcParams["axes.prop_cycle"] = cycler(color=[plt.get_cmap("tab20")(i) for i in range(20)])
    return plt


def _save(fig: Any, ax: Any, path: Path, title: str, xlabel: str, ylabel: str) -> dict[str, Any]:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    series = [h.get_label() for h in ax.get_lines() if not h.get_label().startswith("_")]
    if series:
        ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    meta = dict(
        file=path.name,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        xscale=ax.get_xscale(),
        yscale=ax.get_yscale(),
        series=series,
    )
    _plt().close(fig)
    return meta


def top1_curves(
    curves: dict[str, dict[int, list[tuple[int, float]]]], target: float, out: Path
) -> list[dict[str, Any]]:
    """One figure per method: top-1 vs epoch, a line per global batch (first seed)."""
    plt = _plt()
    metas: list[dict[str, Any]] = []
    for method, by_batch in sorted(curves.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for B, pts in sorted(by_batch.items()):
            ax.plot([e for e, _ in pts], [a for _, a in pts], marker=".", label=f"B={B}")
        ax.axhline(target, color="grey", ls="--", lw=1, label="_target")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", method).strip("_")  # labels may hold spaces and brackets
        metas.append(_save(fig, ax, out / f"top1_{name}.png", f"{method}: top-1 vs epoch", "epoch", "top-1"))
    return metas


def to_target_vs_batch(
    cells: dict[str, dict[int, float]],
    what: str,
    out: Path,
    rcp: list[dict[str, Any]] | None = None,
    train_samples: int | None = None,
) -> dict[str, Any]:
    """epochs/steps/time to target vs global batch, log-log, a line per method; for steps the
    perfect-scaling line (steps x B constant from the smallest batch, Shallue et al.); MLPerf's
    RCPs overlaid where the workload is ImageNet."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    all_b = sorted({B for by in cells.values() for B in by})
    for method, by_batch in sorted(cells.items()):
        pts = sorted(by_batch.items())
        if pts:
            ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o", label=method)
    if what == "steps_to_target" and all_b:
        b0, s0 = min(((b, v) for by in cells.values() for b, v in by.items()), key=lambda x: (x[0], x[1]))
        ax.plot(all_b, [s0 * b0 / b for b in all_b], color="black", ls=":", label="perfect scaling")
    if rcp and train_samples == IMAGENET_TRAIN and what in ("epochs_to_target", "steps_to_target"):
        xs = [r["batch"] for r in rcp]
        ys = [
            r["epochs_to_target"] * (1 if what == "epochs_to_target" else steps_per_epoch(IMAGENET_TRAIN, r["batch"]))
            for r in rcp
        ]
        ax.plot(xs, ys, color="red", ls="--", marker="x", label="MLPerf RCP (LARS)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    label = {
        "epochs_to_target": "epochs to target (samples / N)",
        "steps_to_target": "steps to target",
        "time_to_target_s": "time to target (s)",
    }[what]
    return _save(fig, ax, out / f"{what}.png", f"{label} vs global batch", "global batch", label)


def steps_to_result(items: list[Any], out: Path) -> dict[str, Any]:
    """Shallue et al.'s figure: best steps to target vs global batch per method (log-log),
    each method's perfect-scaling line from its smallest batch (dotted) and the fitted
    S_min (1 + B_noise / B) (dashed), in the method's colour (``items``: report.scaling.Scaling)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    tab10 = plt.get_cmap("tab10")  # ten well-separated hues (tab20 pairs light and dark of one)
    for i, sc in enumerate(x for x in items if x.batches):
        bs = sc.batches
        colour = tab10(i % 10)
        ax.plot(bs, [sc.steps[b] for b in bs], marker="o", color=colour, label=sc.method)
        span = bs + sc.missed
        grid = sorted(set(span))
        if len(bs) > 1:
            ax.plot(grid, [sc.steps[bs[0]] * bs[0] / b for b in grid], color=colour, ls=":", lw=1, label="_perfect")
        if sc.fit is not None:
            s_min, b_noise = sc.fit
            ax.plot(grid, [s_min * (1 + b_noise / b) for b in grid], color=colour, ls="--", lw=1, label="_fit")
        if sc.missed:  # a cross at the top: tried, never reached the target
            ax.plot(sc.missed, [max(sc.steps.values()) * 1.5] * len(sc.missed), "x", color=colour, label="_missed")
    # what the line styles mean, once, in grey
    ax.plot([], [], color="grey", ls=":", lw=1, label="perfect scaling (from the smallest batch)")
    ax.plot([], [], color="grey", ls="--", lw=1, label="fit S_min (1 + B_noise / B)")
    if any(sc.missed for sc in items):
        ax.plot([], [], "x", color="grey", label="tried, target not reached")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    return _save(fig, ax, out / "steps_to_result.png", "best steps to target vs global batch", "global batch", "steps")


def sensitivity(method: str, trials: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """How hard a method is to tune: for each tuned hyperparameter a strip of every trial's best
    top-1 against the sampled value, a colour per global batch, filled where the trial reached
    the target and hollow where it did not (log axis for ranges over a decade)."""
    plt = _plt()
    keys = sorted({k for t in trials for k in (t.get("tuned") or {})})
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.6), squeeze=False)
    batches = sorted({t["global_batch"] for t in trials})
    tab10 = plt.get_cmap("tab10")
    for ax, key in zip(axes[0], keys):
        for j, b in enumerate(batches):
            labelled = False  # a batch's legend entry once, on its first strip
            for reached in (True, False):
                pts = [
                    (t["tuned"][key], t.get("best_top1") or 0.0)
                    for t in trials
                    if t["global_batch"] == b
                    and key in (t.get("tuned") or {})
                    and (t.get("steps_to_target") is not None) == reached
                ]
                if pts:
                    colour = tab10(j % 10)
                    ax.scatter(
                        [x for x, _ in pts],
                        [y for _, y in pts],
                        s=30,
                        facecolors=colour if reached else "none",
                        edgecolors=colour,
                        label="_" if labelled else f"B={b:,}",
                    )
                    labelled = True
        values = [t["tuned"][key] for t in trials if isinstance((t.get("tuned") or {}).get(key), (int, float))]
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel("best top-1")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7, title="filled: reached", title_fontsize=7)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", method).strip("_")
    fig.suptitle(f"{method}: tuning sensitivity (every trial)")
    fig.tight_layout()
    path = out / f"sensitivity_{name}.png"
    fig.savefig(path, dpi=100)
    meta = dict(
        file=path.name,
        title=f"{method}: tuning sensitivity (every trial)",
        xlabel=", ".join(keys),
        ylabel="best top-1",
        xscale=axes[0][0].get_xscale(),
        yscale="linear",
        series=[f"B={b:,}" for b in batches],
    )
    plt.close(fig)
    return meta


def throughput(cells: dict[str, dict[int, float]], xlabel: str, out: Path, name: str) -> dict[str, Any]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, by_x in sorted(cells.items()):
        pts = sorted(by_x.items())
        ax.plot([x for x, _ in pts], [v for _, v in pts], marker="o", label=method)
    ax.set_xscale("log", base=2)
    return _save(fig, ax, out / f"{name}.png", f"images/s vs {xlabel}", xlabel, "images/s")


def noise_scale(cells: dict[str, list[tuple[int, float]]], out: Path) -> dict[str, Any]:
    """B_simple (critical-batch estimate) over training, a line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, pts in sorted(cells.items()):
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", label=method)
    ax.set_yscale("log")
    return _save(fig, ax, out / "noise_scale.png", "gradient-noise scale B_simple", "step", "B_simple")


def time_breakdown(rows: list[dict[str, Any]], parts: tuple[str, ...], out: Path) -> dict[str, Any]:
    """Where the time goes as stacked bars: a bar per cell (method, global batch, framework),
    each part's share of the summed step-time parts (the report's time table, drawn)."""
    plt = _plt()
    labels = [f"{r['method']} B={r['global_batch']:,} ({r['framework']})" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.24 * len(rows)))
    left = [0.0] * len(rows)
    colours = plt.get_cmap("tab10")
    for j, part in enumerate(parts):
        widths = [100 * (r.get(f"{part}_share") or 0.0) for r in rows]
        ax.barh(range(len(rows)), widths, left=left, color=colours(j), label=part, height=0.8)
        left = [a + w for a, w in zip(left, widths)]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.set_xlim(0, 100)
    ax.legend(fontsize=7, ncols=len(parts), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    title = "where the time goes (share of the step-time parts)"
    fig.suptitle(title, fontsize=10)
    ax.set_xlabel("% of the summed parts")
    fig.tight_layout()
    path = out / "time_breakdown.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return dict(
        file=path.name,
        title=title,
        xlabel="% of the summed parts",
        ylabel="cell",
        xscale="linear",
        yscale="linear",
        series=list(parts),
        bars=labels,
    )


def defaultdicts() -> defaultdict[Any, dict[Any, Any]]:
    return defaultdict(dict)

"""The steps-to-result science of a batch-size sweep (framework-free; the report calls it).

Per method, from the best steps to the target at each global batch (a tuned cell's winner):
- **perfect scaling up to**: the largest batch up to which every batch reaching the target
  needed at most ``SLACK`` x the samples (steps x B) of the smallest batch that reached it -
  doubling the batch (nearly) halved the steps (Shallue et al. 2019, figure 1's straight part);
- **knee**: the first batch above the most sample-efficient one whose samples to target
  exceed ``SLACK`` x that minimum - where more batch starts to buy fewer steps than it costs in samples;
- **limit**: the largest batch reaching the target within the epoch budget ("the limit of the
  batch size"); the batches tried that missed it are listed beside;
- **critical batch, predicted**: McCandlish et al. (2018, eq. 2.11) model the steps as
  S = S_min (1 + B_noise / B); fitted here to the measured (B, S) points (least squares on
  log S, at least three batches reaching the target), B_noise is the batch where S = 2 S_min;
- **critical batch, measured**: B_simple = tr(Sigma) / |G|^2, the gradient-noise scale the
  workers measure during training (lbbench/worker/noise_scale.py), pooled over the method's
  runs as the ratio of the summed unbiased parts.
McCandlish et al. found B_noise ~ B_simple up to a small factor; the report prints both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

SLACK = 1.25  # "perfect": samples to target within 25% of the reference (the knee rule)


@dataclass
class Scaling:
    method: str
    steps: dict[int, float]  # global batch -> best steps to target (reached only)
    missed: list[int] = field(default_factory=list)  # batches tried that never reached it
    b_simple: float | None = None  # measured, pooled over the method's runs
    times: dict[int, float] = field(default_factory=dict)  # global batch -> best time to target (s)

    @property
    def batches(self) -> list[int]:
        return sorted(self.steps)

    @property
    def limit(self) -> int | None:
        """The largest batch reaching the target."""
        return self.batches[-1] if self.steps else None

    @property
    def perfect_up_to(self) -> int | None:
        bs = self.batches
        if len(bs) < 2:
            return None  # one batch: no scaling to judge
        ref = self.steps[bs[0]] * bs[0]
        last = bs[0]
        for b in bs[1:]:
            if self.steps[b] * b > SLACK * ref:
                break
            last = b
        return last

    @property
    def knee(self) -> int | None:
        if len(self.steps) < 2:
            return None
        least, at = min((s * b, b) for b, s in self.steps.items())
        # past the most sample-efficient batch (a batch below it may be worse from too few steps)
        return next((b for b in self.batches if b > at and self.steps[b] * b > SLACK * least), None)

    @property
    def fewest_steps(self) -> tuple[float, int] | None:
        """(steps, batch) of the fewest steps to the target (ties: the smaller batch)."""
        return min(((s, b) for b, s in self.steps.items()), default=None)

    @property
    def fastest(self) -> tuple[float, int] | None:
        """(seconds, batch) of the shortest time to the target."""
        return min(((t, b) for b, t in self.times.items()), default=None)

    @cached_property  # a least-squares fit: the table and the figure both read it
    def fit(self) -> tuple[float, float] | None:
        """(S_min, B_noise) of S = S_min (1 + B_noise / B), or None with fewer than three points."""
        return fit_critical_batch(self.steps)


def fit_critical_batch(steps: dict[int, float]) -> tuple[float, float] | None:
    """Least squares of log S = log S_min + log(1 + B_noise / B) over the points, both
    parameters kept positive (fitted as logarithms). None with fewer than three points."""
    if len(steps) < 3:
        return None
    import numpy as np
    from scipy.optimize import least_squares

    b = np.array(sorted(steps), dtype=np.float64)
    s = np.array([steps[int(x)] for x in b], dtype=np.float64)

    def residual(p: Any) -> Any:
        s_min, b_noise = np.exp(p)
        return np.log(s_min * (1.0 + b_noise / b)) - np.log(s)

    # start: S_min from the largest batch, B_noise at the middle of the range
    x0 = np.array([math.log(float(s.min()) / 2), math.log(float(np.sqrt(b[0] * b[-1])))])
    r = least_squares(residual, x0, method="lm")
    s_min, b_noise = (float(v) for v in np.exp(r.x))
    return s_min, b_noise


def pooled_b_simple(parts: list[tuple[float, float]]) -> float | None:
    """B_simple from (|G|^2, tr(Sigma)) estimates: the ratio of their sums (each part is
    unbiased, their ratio is not: average before dividing). None when the sums are not positive."""
    g2 = sum(p[0] for p in parts)
    tr = sum(p[1] for p in parts)
    return tr / g2 if g2 > 0 and tr > 0 else None


def scalings(rows: list[dict[str, object]], noise: dict[str, list[tuple[float, float]]] | None = None) -> list[Scaling]:
    """A Scaling per key (the report's method key) from rows with ``key``, ``global_batch`` and
    ``steps_to_target`` (None: not reached), and optionally ``time_to_target_s``; ``noise`` maps
    a key to its (|G|^2, tr) parts."""
    out: dict[str, Scaling] = {}
    for r in rows:
        key = str(r["key"])
        sc = out.setdefault(key, Scaling(key, {}))
        b = int(r["global_batch"])  # type: ignore[call-overload]
        st = r.get("steps_to_target")
        if st is None:
            sc.missed.append(b)
        else:
            sc.steps[b] = min(float(st), sc.steps.get(b, math.inf))  # type: ignore[arg-type]
            t = r.get("time_to_target_s")
            if t is not None:
                sc.times[b] = min(float(t), sc.times.get(b, math.inf))  # type: ignore[arg-type]
    for sc in out.values():
        sc.missed = sorted(set(sc.missed) - set(sc.steps))
        if noise and noise.get(sc.method):
            sc.b_simple = pooled_b_simple(noise[sc.method])
    return [out[k] for k in sorted(out)]


def _b(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def steps_markdown(items: list[Scaling]) -> str:
    """The best steps to target as a method x global batch grid ("missed": tried, not reached;
    blank: not tried) - the numbers behind the figure, one line per method."""
    batches = sorted({b for sc in items for b in [*sc.steps, *sc.missed]})
    lines = ["| method | " + " | ".join(f"{b:,}" for b in batches) + " |", "|" + "---|" * (len(batches) + 1)]
    for sc in items:
        cells = [f"{sc.steps[b]:,.0f}" if b in sc.steps else "missed" if b in sc.missed else "" for b in batches]
        lines.append(f"| {sc.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def duration(seconds: float) -> str:
    """Minutes, as MLPerf states time to train: one unit down the column, so that it sorts as
    numbers; three significant digits below 100 (a small workload's seconds stay visible)."""
    m = seconds / 60
    return f"{m:,.0f} min" if m >= 100 else f"{m:.3g} min"


def _at(best: tuple[float, int] | None, fmt: Any) -> str:
    return "-" if best is None else f"{fmt(best[0])} ({best[1]:,})"


def _knee(sc: Scaling) -> str:
    if len(sc.steps) < 2:
        return "-"
    return _b(sc.knee) if sc.knee is not None else f"beyond {sc.limit:,}"


def markdown(items: list[Scaling]) -> str:
    cols = [
        "method",
        "fewest steps (at batch)",
        "best time to target (at batch)",
        "batches reaching the target",
        "perfect scaling up to",
        "knee",
        "limit (missed at)",
        "S_min",
        "critical batch B_noise (fit)",
        "B_simple (measured)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for sc in items:
        fit = sc.fit
        limit = _b(sc.limit) + (f" ({', '.join(f'{b:,}' for b in sc.missed)})" if sc.missed else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    sc.method,
                    _at(sc.fewest_steps, lambda v: f"{v:,.0f}"),
                    _at(sc.fastest, duration),
                    f"{len(sc.steps)} of {len(sc.steps) + len(sc.missed)}",
                    _b(sc.perfect_up_to),
                    _knee(sc),
                    limit,
                    "-" if fit is None else f"{fit[0]:,.1f}",
                    "-" if fit is None else f"{fit[1]:,.0f}",
                    _b(sc.b_simple),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"

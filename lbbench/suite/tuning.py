"""Tuning studies: the trials of a cell, known at plan time.

A study draws ``trials`` points of a scrambled Halton sequence (scipy.stats.qmc, the
quasi-random sampler of AlgoPerf and Shallue et al.) seeded by (tuning seed, study), and maps
each coordinate onto one searched hyperparameter. Every cell of a study gets the same points,
so every method and batch size is tuned with the same budget over the same draws of its
space. A trial is an ordinary run whose method entry has the sampled values applied: its run
id derives from them, it resumes, skips when done and fails alone.
"""

from __future__ import annotations

import math
from typing import Any

from lbbench.suite.config import Distribution, TuningCfg

LR_FIELDS = {
    "base_lr",
    "warmup_epochs",
    "warmup_start_lr",
    "end_lr",
    "end_factor",
    "poly_power",
    "decay_factor",
    "train_epochs",
    "decay_start_epochs",
    "schedule",
    "rule",
    "base_batch",
}

# fields of the method entry itself that a study may search (AlgoPerf searches label smoothing)
TOP_FIELDS = ("label_smoothing",)


def problems(cfg: TuningCfg, hparams: set[str]) -> list[tuple[tuple[Any, ...], str]]:
    """(path inside the tuning block, message) for each bad entry of a search space."""
    out: list[tuple[tuple[Any, ...], str]] = []
    for key, dist in cfg.space.items():
        where = ("space", key)
        group, _, name = key.partition(".")
        if key in TOP_FIELDS:
            pass
        elif group == "lr" and name not in LR_FIELDS:
            out.append((where, f"lr.{name} is not a searchable LR field; known: {', '.join(sorted(LR_FIELDS))}"))
        elif group == "hparams" and name not in hparams:
            out.append((where, f"unknown hyperparameter {name!r}; known: {', '.join(sorted(hparams))}"))
        elif group not in ("lr", "hparams") or not name:
            out.append((where, f"a searched key is lr.<field>, hparams.<name> or one of {', '.join(TOP_FIELDS)}"))
        set_ = [k for k in Distribution.model_fields if getattr(dist, k) is not None]
        if len(set_) != 1:
            out.append((where, f"give exactly one distribution of {', '.join(Distribution.model_fields)}"))
            continue
        kind = set_[0]
        if kind == "choice":
            continue
        lo, hi = getattr(dist, kind)
        if not lo < hi:
            out.append((where + (kind,), f"empty range [{lo}, {hi}]: the low end must be below the high end"))
        elif kind == "log_uniform" and lo <= 0:
            out.append((where + (kind,), f"a log-uniform range must be positive, got [{lo}, {hi}]"))
        elif kind == "one_minus_log_uniform" and not 0 <= lo < hi < 1:
            out.append((where + (kind,), f"one_minus_log_uniform needs 0 <= low < high < 1, got [{lo}, {hi}]"))
    return out


def _value(dist: Distribution, u: float) -> Any:
    if dist.choice is not None:
        return dist.choice[min(int(u * len(dist.choice)), len(dist.choice) - 1)]
    if dist.log_uniform is not None:
        lo, hi = dist.log_uniform
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    if dist.uniform is not None:
        lo, hi = dist.uniform
        return lo + u * (hi - lo)
    if dist.int_uniform is not None:
        lo_i, hi_i = dist.int_uniform
        return min(lo_i + int(u * (hi_i - lo_i + 1)), hi_i)
    assert dist.one_minus_log_uniform is not None
    lo, hi = dist.one_minus_log_uniform
    a, b = math.log(1 - hi), math.log(1 - lo)  # 1 - x spans [1 - hi, 1 - lo]
    return 1 - math.exp(a + u * (b - a))


def trials(cfg: TuningCfg, study: int) -> list[dict[str, Any]]:
    """The study's trials: {searched key: value}, in trial order."""
    from scipy.stats import qmc

    keys = sorted(cfg.space)
    points = qmc.Halton(d=len(keys), scramble=True, seed=cfg.seed * 1009 + study).random(cfg.trials)
    return [{k: _value(cfg.space[k], float(u)) for k, u in zip(keys, row)} for row in points]


def apply(values: dict[str, Any], hparams: dict[str, Any], lr: dict[str, Any]) -> dict[str, Any]:
    """The fields of a method entry with a trial's values applied (for ``MethodCfg.model_copy``)."""
    hp, lrs = dict(hparams), dict(lr)
    top: dict[str, Any] = {}
    for key, v in values.items():
        group, _, name = key.partition(".")
        if key in TOP_FIELDS:
            top[key] = v
        else:
            (hp if group == "hparams" else lrs)[name] = v
    return dict(hparams=hp, lr=lrs, **top)

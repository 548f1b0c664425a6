"""Aggregate the metrics of one experiment trained with several seeds (mean and spread).

One seed per row cannot tell a +0.02 AP ablation from noise on a few dozen test images; the
DoNet paper reports mean +/- std over runs. The aggregate keeps the evaluator's layout (every
numeric leaf is the mean over seeds, so tables read it like any metrics file) and adds
``seed_std`` with the same layout (sample standard deviation, ddof = 1), ``seeds`` and the
per-seed metrics files, which stay available as rows of their own.
"""
from __future__ import annotations

import math
from numbers import Number
from typing import Any, Sequence

_META = ("provenance", "seeds", "seed_std", "per_seed")


def _is_number(v: Any) -> bool:
    return isinstance(v, Number) and not isinstance(v, bool)


def _combine(values: list, reduce):
    first = values[0]
    if all(_is_number(v) for v in values):
        return reduce([float(v) for v in values])
    if any(v is None for v in values) and all(v is None or _is_number(v) for v in values):
        return None  # a metric undefined for one seed is undefined for the aggregate
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
        return {k: _combine([v[k] for v in values], reduce) for k in first if k not in _META}
    if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in values):
        return [_combine(list(items), reduce) for items in zip(*values)]
    return first if all(v == first for v in values) else None


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def aggregate_seeds(metrics: Sequence[dict], seeds: Sequence[int], files: Sequence[str] = ()) -> dict:
    """Mean over seeds of every numeric metric, ``seed_std`` alongside."""
    if not metrics or len(metrics) != len(seeds):
        raise ValueError(f"need one metrics dict per seed, got {len(metrics)} for seeds {list(seeds)}")
    out = _combine(list(metrics), _mean)
    # one seed has no spread: no std (tables then print the value without "± 0.00")
    out["seed_std"] = _combine(list(metrics), _std) if len(metrics) > 1 else None
    out["seeds"] = [int(s) for s in seeds]
    out["per_seed"] = list(files)
    out["provenance"] = {"seeds": [m.get("provenance") for m in metrics]}
    return out

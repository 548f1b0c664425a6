"""Named study tables: one paper table = a chosen set of experiments and columns.

Configured under ``report.tables`` (e.g. the thesis' head ablation, Table 5.1/5.2, is a
pixel table of the four head configurations restricted to cytoplasm and nucleus).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from overlapseg.report.tables import metrics_table, pixel_table, write_table
from overlapseg.utils.io import read_json


def study_table(metrics: Sequence[dict], experiments: Sequence[str], kind: str = "instance",
                preset: str = "default", classes: Sequence[str] | None = None):
    """``kind`` instance: ``metrics_table`` with ``preset``; pixel: ``pixel_table`` on ``classes``."""
    if kind == "instance":
        return metrics_table(metrics, experiments, preset)
    if kind == "pixel":
        if classes is not None:
            metrics = [{**m, "pixel": {c: v for c, v in (m.get("pixel") or {}).items() if c in classes}}
                       for m in metrics]
        return pixel_table(metrics, experiments)
    raise ValueError(f"unknown table kind {kind!r} (instance or pixel)")


def write_study_table(metrics_paths: Sequence[str | os.PathLike], experiments: Sequence[str],
                      stem: str | os.PathLike, title: str = "", **spec) -> list[Path]:
    metrics = [read_json(p) for p in metrics_paths]
    return write_table(study_table(metrics, experiments, **spec), stem, title)

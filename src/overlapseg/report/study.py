"""Named study tables: one paper table = a chosen set of experiments and columns.

Configured under ``report.tables`` (e.g. the thesis' head ablation, Table 5.1/5.2, is a
pixel table of the four head configurations restricted to cytoplasm and nucleus). The
per-dataset ``metrics`` and ``pixel`` tables are the same thing with every experiment:
:func:`build_table` makes any of them from a spec, so the provenance audit rebuilds exactly
the table that was written.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from overlapseg.report.captions import table_caption
from overlapseg.report.tables import Table, metrics_table, pixel_table, write_table
from overlapseg.utils.io import read_json


def study_table(metrics: Sequence, experiments: Sequence[str], kind: str = "instance",
                preset: str = "default", classes: Sequence[str] | None = None,
                labels: Sequence[str] | None = None) -> Table:
    """``kind`` instance: ``metrics_table`` with ``preset``; pixel: ``pixel_table`` on ``classes``."""
    if kind == "instance":
        return metrics_table(metrics, experiments, preset, labels)
    if kind == "pixel":
        return pixel_table(metrics, experiments, labels=labels, classes=classes)
    raise ValueError(f"unknown table kind {kind!r} (instance or pixel)")


def build_table(spec: dict, metrics: Sequence, experiments: Sequence[str],
                labels: Sequence[str] | None = None) -> Table:
    """The table a spec (``kind``, ``preset``, ``classes``; other keys ignored) describes."""
    return study_table(metrics, experiments, kind=spec.get("kind", "instance"),
                       preset=spec.get("preset", "default"), classes=spec.get("classes"), labels=labels)


def write_study_table(metrics_paths: Sequence[str | os.PathLike], experiments: Sequence[str],
                      stem: str | os.PathLike, title: str = "", labels: Sequence[str] | None = None,
                      caption_info: dict | None = None, **spec) -> list[Path]:
    """``stem``.csv/.md/.tex/.html of one study table; the caption (Markdown, LaTeX, HTML) from
    ``title`` and ``caption_info`` (:mod:`overlapseg.report.captions`: dataset, splits file,
    split preset, per-row budgets, notes)."""
    metrics = [read_json(p) for p in metrics_paths]
    table = study_table(metrics, experiments, labels=labels, **spec)
    return write_table(table, stem, table_caption(title, table, caption_info))

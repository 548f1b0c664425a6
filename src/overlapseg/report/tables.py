"""Paper-style metric tables: one row per experiment, CSV + Markdown + LaTeX (booktabs).

Column presets follow the tables of the five papers (metric keys of
``overlapseg.evaluate.evaluate``; ``scale`` 100 = percent as printed in the paper, ``digits``
= the paper's precision). The best value of each column is bold (lowest for error rates).
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from overlapseg.utils.io import atomic_path, read_json

LOWER_IS_BETTER = {"FNo", "FPp"}

# preset -> (metric keys per category, scale, digits, categories)
PRESETS: dict[str, dict] = {
    # Study default: mask + boundary AP and the matching metrics, both categories and mean.
    "default": {"keys": ["AP", "AP50", "AP75", "boundary_AP", "AJI", "Dice", "F1"], "scale": 100,
                "digits": 2, "categories": ["cytoplasm", "nucleus", "mean"]},
    # CC framework, Tables 1-3: 0.5AP^m, 0.7AP^m, 0.5AP^b_TP, 0.7AP^b_TP in percent, 2 decimals.
    "cc": {"keys": ["AP50", "AP70", "AP_TP_boundary@0.5", "AP_TP_boundary@0.7"], "scale": 100,
           "digits": 2, "categories": ["cytoplasm"]},
    # IRNet, Tables 1-2: AJI and F1 for cytoplasm and nuclei, fractions with 4 decimals.
    "irnet": {"keys": ["AJI", "F1"], "scale": 1, "digits": 4, "categories": ["cytoplasm", "nucleus"]},
    # DoNet, Tables 1/3: mAP, Dice, F1, AJI (percent, 2 decimals), categories averaged.
    "donet": {"keys": ["AP", "Dice", "F1", "AJI"], "scale": 100, "digits": 2, "categories": ["mean"]},
    # DoNet Table 2 / ISBI 2014 challenge: Dice, TP_p, FN_o as fractions with 3 decimals.
    "isbi": {"keys": ["ISBI_Dice", "TPp", "FNo", "FPp"], "scale": 1, "digits": 3,
             "categories": ["cytoplasm"]},
    # Thesis, Tables 5.x: COCO mask AP family in percent, 1 decimal.
    "thesis": {"keys": ["AP", "AP50", "AP75", "APs", "APm", "APl"], "scale": 100, "digits": 1,
               "categories": ["cytoplasm"]},
    # Coarse-to-fine paper, Tables I-III: pixel seg / instance seg F1 (percent, 2 decimals).
    "c2f": {"keys": ["pixel_seg_F1", "instance_seg_F1"], "scale": 100, "digits": 2,
            "categories": ["nucleus"]},
}
PIXEL_KEYS = ["accuracy", "precision", "recall", "F1", "IoU"]
PIXEL_CLASSES = ["cytoplasm", "nucleus", "overlap", "border", "background"]


@dataclass
class Table:
    """Formatted table: ``groups`` are the top header (category/class) spanning ``keys``."""

    experiments: list[str]
    columns: list[tuple[str, str]]  # (group, key)
    values: list[list[float | None]]  # scaled, rows x columns
    digits: int
    provenance: list[str]
    bold: list[list[bool]]

    def cell(self, i: int, j: int) -> str:
        v = self.values[i][j]
        return "n/a" if v is None else f"{v:.{self.digits}f}"


def _provenance_id(metrics: dict) -> str:
    prov = metrics.get("provenance") or {}
    return str(prov.get("id", "")) if isinstance(prov, dict) else ""


def _finish(experiments, columns, values, digits, provenance) -> Table:
    bold = [[False] * len(columns) for _ in experiments]
    for j, (_, key) in enumerate(columns):
        rounded = [None if row[j] is None else round(row[j], digits) for row in values]
        present = [v for v in rounded if v is not None]
        if len(present) < 2:
            continue
        best = min(present) if key in LOWER_IS_BETTER else max(present)
        for i, v in enumerate(rounded):
            bold[i][j] = v == best
    return Table(list(experiments), columns, values, digits, provenance, bold)


def metrics_table(metrics: Sequence[dict], experiments: Sequence[str], preset: str = "default") -> Table:
    """Instance-metric table of ``preset`` from evaluator outputs (same order as ``experiments``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown table preset {preset!r}; known: {', '.join(PRESETS)}")
    if len(metrics) != len(experiments):
        raise ValueError(f"{len(metrics)} metrics files for {len(experiments)} experiment names")
    cfg = PRESETS[preset]
    columns = [(c, k) for c in cfg["categories"] for k in cfg["keys"]]
    values = []
    for m in metrics:
        row = []
        for c, k in columns:
            v = (m.get(c) or {}).get(k)
            row.append(None if v is None else float(v) * cfg["scale"])
        values.append(row)
    return _finish(experiments, columns, values, cfg["digits"], [_provenance_id(m) for m in metrics])


def pixel_table(metrics: Sequence[dict], experiments: Sequence[str], digits: int = 2) -> Table:
    """Semantic pixel metrics (percent) for the classes any experiment reports (thesis tables)."""
    present = {c for m in metrics for c in (m.get("pixel") or {})}
    classes = [c for c in PIXEL_CLASSES if c in present and c != "background"]
    columns = [(c, k) for c in classes for k in PIXEL_KEYS]
    values = [[None if ((m.get("pixel") or {}).get(c) or {}).get(k) is None
               else 100 * float(m["pixel"][c][k]) for c, k in columns] for m in metrics]
    return _finish(experiments, columns, values, digits, [_provenance_id(m) for m in metrics])


# ----------------------------------------------------------------------------- rendering
def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["experiment"] + [f"{g}/{k}" for g, k in t.columns] + ["provenance"])
    for i, e in enumerate(t.experiments):
        w.writerow([e] + ["" if t.values[i][j] is None else t.cell(i, j) for j in range(len(t.columns))]
                   + [t.provenance[i]])
    return buf.getvalue()


def to_markdown(t: Table) -> str:
    head = ["experiment"] + [f"{g} {k}" for g, k in t.columns] + ["provenance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(t.columns) + ["---"]) + "|"]
    for i, e in enumerate(t.experiments):
        cells = [f"**{t.cell(i, j)}**" if t.bold[i][j] else t.cell(i, j) for j in range(len(t.columns))]
        lines.append("| " + " | ".join([e] + cells + [f"`{t.provenance[i]}`" if t.provenance[i] else ""]) + " |")
    if not t.columns:
        lines.append("\n(no metrics for this table)")
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def to_latex(t: Table, caption: str = "") -> str:
    """booktabs tabular: a category row spanning its metrics, then metric names."""
    n = len(t.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [rf"\begin{{tabular}}{{l{'r' * n}l}}", r"\toprule"]
    groups: list[tuple[str, int]] = []
    for g, _ in t.columns:
        if groups and groups[-1][0] == g:
            groups[-1] = (g, groups[-1][1] + 1)
        else:
            groups.append((g, 1))
    top, rules, col = [""], [], 2
    for g, span in groups:
        top.append(rf"\multicolumn{{{span}}}{{c}}{{{_tex(g)}}}")
        rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
        col += span
    lines.append(" & ".join(top + [""]) + r" \\")
    if rules:
        lines.append(" ".join(rules))
    lines.append(" & ".join(["Experiment"] + [_tex(k) for _, k in t.columns] + ["Provenance"]) + r" \\")
    lines.append(r"\midrule")
    for i, e in enumerate(t.experiments):
        cells = []
        for j in range(n):
            c = "--" if t.values[i][j] is None else t.cell(i, j)
            cells.append(rf"\textbf{{{c}}}" if t.bold[i][j] else c)
        lines.append(" & ".join([_tex(e)] + cells + [rf"\texttt{{{_tex(t.provenance[i])}}}"]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_table(t: Table, stem: str | os.PathLike, caption: str = "") -> list[Path]:
    """Write ``stem``.csv/.md/.tex atomically; returns the paths."""
    stem = Path(stem)
    out = []
    for suffix, text in ((".csv", to_csv(t)), (".md", to_markdown(t)), (".tex", to_latex(t, caption))):
        path = stem.with_name(stem.name + suffix)
        _write_text(path, text)
        out.append(path)
    return out


def has_pixel(metrics: Sequence[dict]) -> bool:
    return any(m.get("pixel") for m in metrics)


def write_tables(metrics_paths: Sequence[str | os.PathLike], experiments: Sequence[str],
                 out_dir: str | os.PathLike, preset: str = "default", pixel: bool | None = None,
                 dataset: str = "") -> list[Path]:
    """metrics.{csv,md,tex} (+ pixel.{csv,md,tex} if ``pixel`` or, when None, if any has pixel metrics)."""
    metrics = [read_json(p) for p in metrics_paths]
    out_dir = Path(out_dir)
    label = f" on {dataset}" if dataset else ""
    written = write_table(metrics_table(metrics, experiments, preset), out_dir / "metrics",
                          f"Instance segmentation metrics{label} (preset {preset}).")
    if pixel or (pixel is None and has_pixel(metrics)):
        written += write_table(pixel_table(metrics, experiments), out_dir / "pixel",
                               f"Pixel-level semantic metrics{label} (percent).")
    return written

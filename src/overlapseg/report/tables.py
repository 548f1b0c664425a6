"""Paper-style metric tables: one row per experiment, CSV + Markdown + LaTeX (booktabs).

Column presets follow the tables of the five papers (metric keys of
``overlapseg.evaluate.evaluate``; ``scale`` 100 = percent as printed in the paper, ``digits``
= the paper's precision). The best value of each column is bold (lowest for error rates).

Rows are named by the paper's label (``label:`` of the experiment, default its id); the
experiment id and the provenance id are the last two columns. A cell is ``n/a`` when the
metric is undefined (e.g. no instances in an overlap bin) or when the model does not predict
the class at all (:func:`predicts`), never a misleading 0. A row may average several runs
(seeds): pass a list of metrics dicts and the cell reads ``mean ± std``.
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

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
    # Overlap-binned AP and AJI (DoNet/IRNet: where overlapping cells are won or lost); one
    # column group per overlap-ratio bin of evaluate.overlap_bins, read from the metrics.
    "overlap": {"keys": ["AP", "AJI", "best_IoU", "recall50"], "scale": 100, "digits": 2, "categories": ["cytoplasm"],
                "by": "by_overlap"},
    # Thesis Table 5.11 error analysis: AP as predicted, with gt masks for matched predictions
    # ("w_gt_mask": how much is mask quality) and keeping matched predictions only ("gt_matched":
    # how much is false positives).
    "error_analysis": {"keys": ["AP", "AP50", "AP75"], "scale": 100, "digits": 1,
                       "categories": ["cytoplasm"], "by": "error_analysis",
                       "groups": ["w_gt_mask", "gt_matched"]},
}
PIXEL_KEYS = ["accuracy", "precision", "recall", "F1", "IoU"]
PIXEL_CLASSES = ["cytoplasm", "nucleus", "overlap", "border", "background"]


NOT_PREDICTED = "not predicted"
UNDEFINED = "undefined"
CATEGORIES = ("cytoplasm", "nucleus")

Metrics = Union[dict, Sequence[dict]]  # one run, or several runs (seeds) of one experiment


def predicts(metrics: dict, category: str) -> bool:
    """Whether the model behind ``metrics`` predicts ``category`` at all.

    Rule: a category is *not predicted* when the predictions file holds no instance of it
    (``n_pred == 0``) and the model wrote no semantic map of it (the ``pixel`` block lacks
    the class, or there is none). A model that predicts the class but found none on the test
    images keeps its 0 (its semantic maps carry the class). ``mean`` (over the evaluated
    categories) counts as predicted only when every category is. Pixel tables: a class
    missing from ``pixel`` is not predicted. Without ``n_pred`` nothing is decided (True).
    """
    if category == "mean":
        cats = (metrics.get("params") or {}).get("categories") or [c for c in CATEGORIES if c in metrics]
        return all(predicts(metrics, c) for c in cats)
    block = metrics.get(category)
    if not isinstance(block, dict) or block.get("n_pred") is None or block["n_pred"] > 0:
        return True
    return category in (metrics.get("pixel") or {})


@dataclass
class Table:
    """Formatted table: ``groups`` are the top header (category/class) spanning ``keys``.

    ``experiments`` are the experiment ids, ``labels`` the row names (default: the ids);
    ``paths[j]`` is where column j's number sits in a metrics JSON (before ``scale``);
    ``status[i][j]`` is "" for a number, else why the cell is n/a; ``stds`` (rows of several
    runs) the standard deviation of each cell, None for single runs.
    """

    experiments: list[str]
    columns: list[tuple[str, str]]  # (group, key)
    values: list[list[float | None]]  # scaled, rows x columns
    digits: int
    provenance: list[str]
    bold: list[list[bool]]
    labels: list[str] | None = None
    paths: list[tuple[str, ...]] = field(default_factory=list)
    scale: float = 1.0
    status: list[list[str]] | None = None
    stds: list[list[float | None]] | None = None
    runs: list[int] | None = None

    def __post_init__(self) -> None:
        self.labels = list(self.labels) if self.labels is not None else list(self.experiments)
        if len(self.labels) != len(self.experiments):
            raise ValueError(f"{len(self.labels)} row labels for {len(self.experiments)} experiments")
        if self.status is None:
            self.status = [["" if v is not None else UNDEFINED for v in row] for row in self.values]
        if self.runs is None:
            self.runs = [1] * len(self.experiments)

    def cell(self, i: int, j: int) -> str:
        v = self.values[i][j]
        if v is None:
            return "n/a"
        s = None if self.stds is None else self.stds[i][j]
        return f"{v:.{self.digits}f}" + ("" if s is None else f" ± {s:.{self.digits}f}")

    @property
    def column_names(self) -> list[str]:
        """Column headers as in the CSV: ``group/key``."""
        return [f"{g}/{k}" for g, k in self.columns]


def _runs(m: Metrics) -> list[dict]:
    return [m] if isinstance(m, dict) else list(m)


def _provenance_id(metrics: Metrics) -> str:
    """The row's provenance id; several runs (or a seed aggregate): their ids joined by '+'."""
    ids = []
    for run in _runs(metrics):
        prov = run.get("provenance") or {}
        if not isinstance(prov, dict):
            ids.append("")
        elif isinstance(prov.get("seeds"), list):  # overlapseg.evaluate.seeds.aggregate_seeds
            ids += [str((p or {}).get("id", "")) for p in prov["seeds"]]
        else:
            ids.append(str(prov.get("id", "")))
    return "+".join(ids)


def _lookup(run: dict, path: Sequence[str]):
    node = run
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _cell(metrics: Metrics, path: Sequence[str], scale: float, predicted) -> tuple:
    """(mean, std or None, status) of one cell over the runs of a row.

    A list of runs gives their mean and sample std; a seed aggregate (a metrics dict with
    ``seed_std``, ``overlapseg.evaluate.seeds``) its stored mean and std.
    """
    runs = _runs(metrics)
    if not any(predicted(r) for r in runs):
        return None, None, NOT_PREDICTED
    vals = [float(v) * scale for r in runs if predicted(r) and (v := _lookup(r, path)) is not None]
    if not vals:
        return None, None, UNDEFINED
    if len(runs) == 1:
        std = _lookup(runs[0].get("seed_std"), path) if isinstance(runs[0].get("seed_std"), dict) else None
        return vals[0], None if std is None else float(std) * scale, ""
    mean = math.fsum(vals) / len(vals)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, ""


def _build(metrics: Sequence[Metrics], experiments, labels, columns, paths, predicted, scale,
           digits) -> Table:
    if len(metrics) != len(experiments):
        raise ValueError(f"{len(metrics)} metrics files for {len(experiments)} experiment names")
    cells = [[_cell(m, p, scale, lambda r, c=c: predicted(r, c)) for (c, _), p in zip(columns, paths)]
             for m in metrics]
    values = [[c[0] for c in row] for row in cells]
    several = any(not isinstance(m, dict) or "seed_std" in m for m in metrics)
    return Table(list(experiments), columns, values, digits, [_provenance_id(m) for m in metrics],
                 _bold(columns, values, digits), labels, [tuple(p) for p in paths], scale,
                 [[c[2] for c in row] for row in cells],
                 [[c[1] for c in row] for row in cells] if several else None,
                 [len(_runs(m)) for m in metrics])


def _bold(columns, values, digits) -> list[list[bool]]:
    """Best value of each column (after rounding to the printed digits; ties all bold)."""
    bold = [[False] * len(columns) for _ in values]
    for j, (_, key) in enumerate(columns):
        rounded = [None if row[j] is None else round(row[j], digits) for row in values]
        present = [v for v in rounded if v is not None]
        if len(present) < 2:
            continue
        best = min(present) if key in LOWER_IS_BETTER else max(present)
        for i, v in enumerate(rounded):
            bold[i][j] = v == best
    return bold


def metrics_table(metrics: Sequence[Metrics], experiments: Sequence[str], preset: str = "default",
                  labels: Sequence[str] | None = None) -> Table:
    """Instance-metric table of ``preset`` from evaluator outputs (same order as ``experiments``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown table preset {preset!r}; known: {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if "by" not in cfg:
        columns = [(c, k) for c in cfg["categories"] for k in cfg["keys"]]
        paths = list(columns)
    else:  # column groups one level deeper: overlap bins or error-analysis variants
        columns, paths = [], []
        for c in cfg["categories"]:
            if cfg["by"] == "error_analysis":  # as predicted, then each variant
                columns += [(c, k) for k in cfg["keys"]]
                paths += [(c, k) for k in cfg["keys"]]
            for g in cfg.get("groups") or _sub_groups(metrics, c, cfg["by"]):
                columns += [(f"{c} {g}", k) for k in cfg["keys"]]
                paths += [(c, cfg["by"], g, k) for k in cfg["keys"]]
    return _build(metrics, experiments, labels, columns, paths,
                  lambda run, group: predicts(run, group.split(" ")[0]), cfg["scale"], cfg["digits"])


def _sub_groups(metrics: Sequence[Metrics], category: str, by: str) -> list[str]:
    """Keys under ``category.by`` in the first run that has them (e.g. overlap-bin labels)."""
    for m in metrics:
        for run in _runs(m):
            block = _lookup(run, (category, by))
            if isinstance(block, dict) and block:
                return list(block)
    raise ValueError(f"no metrics file has {category}.{by}")


def _predicts_pixel(run: dict, cls: str) -> bool:
    return cls in (run.get("pixel") or {})


def pixel_table(metrics: Sequence[Metrics], experiments: Sequence[str], digits: int = 2,
                labels: Sequence[str] | None = None, classes: Sequence[str] | None = None) -> Table:
    """Semantic pixel metrics (percent) of ``classes`` (default: those any experiment reports)."""
    if classes is None:
        present = {c for m in metrics for r in _runs(m) for c in (r.get("pixel") or {})}
        classes = [c for c in PIXEL_CLASSES if c in present and c != "background"]
    columns = [(c, k) for c in classes for k in PIXEL_KEYS]
    return _build(metrics, experiments, labels, columns, [("pixel", c, k) for c, k in columns],
                  _predicts_pixel, 100, digits)


# ----------------------------------------------------------------------------- rendering
def to_csv(t: Table) -> str:
    """label, one column per metric (``n/a`` where undefined or not predicted), experiment, provenance."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label"] + t.column_names + ["experiment", "provenance"])
    for i, e in enumerate(t.experiments):
        w.writerow([t.labels[i]] + [t.cell(i, j) for j in range(len(t.columns))] + [e, t.provenance[i]])
    return buf.getvalue()


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: Table) -> str:
    head = ["label"] + [f"{g} {k}" for g, k in t.columns] + ["experiment", "provenance"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(t.columns) + ["---", "---"]) + "|"]
    for i, e in enumerate(t.experiments):
        cells = [f"**{t.cell(i, j)}**" if t.bold[i][j] else t.cell(i, j) for j in range(len(t.columns))]
        prov = f"`{t.provenance[i]}`" if t.provenance[i] else ""
        lines.append("| " + " | ".join([_md(t.labels[i])] + cells + [f"`{e}`", prov]) + " |")
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
    lines += [rf"\begin{{tabular}}{{l{'r' * n}ll}}", r"\toprule"]
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
    lines.append(" & ".join(top + ["", ""]) + r" \\")
    if rules:
        lines.append(" ".join(rules))
    lines.append(" & ".join(["Method"] + [_tex(k) for _, k in t.columns] + ["Experiment", "Provenance"])
                 + r" \\")
    lines.append(r"\midrule")
    for i, e in enumerate(t.experiments):
        cells = []
        for j in range(n):
            c = t.cell(i, j).replace("±", r"$\pm$")
            cells.append(rf"\textbf{{{c}}}" if t.bold[i][j] else c)
        lines.append(" & ".join([_tex(t.labels[i])] + cells + [rf"\texttt{{{_tex(e)}}}",
                                                              rf"\texttt{{{_tex(t.provenance[i])}}}"])
                     + r" \\")
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
                 dataset: str = "", labels: Sequence[str] | None = None) -> list[Path]:
    """metrics.{csv,md,tex} (+ pixel.{csv,md,tex} if ``pixel`` or, when None, if any has pixel metrics)."""
    metrics = [read_json(p) for p in metrics_paths]
    out_dir = Path(out_dir)
    label = f" on {dataset}" if dataset else ""
    written = write_table(metrics_table(metrics, experiments, preset, labels), out_dir / "metrics",
                          f"Instance segmentation metrics{label} (preset {preset}).")
    if pixel or (pixel is None and has_pixel(metrics)):
        written += write_table(pixel_table(metrics, experiments, labels=labels), out_dir / "pixel",
                               f"Pixel-level semantic metrics{label} (percent).")
    return written

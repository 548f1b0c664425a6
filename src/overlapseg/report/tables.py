"""Paper-style metric tables: one row per experiment, CSV + Markdown + LaTeX (booktabs) + HTML.

Column presets follow the tables of the five papers (metric keys of
``overlapseg.evaluate.evaluate``). Numbers follow one format per metric family in every table
(:data:`FAMILIES`: scores in percent with 1 decimal, error rates in percent with 2), so the
same metric never reads 0.0 in one table and 0.0000 in another.

Rows are named by the paper's label (``label:`` of the experiment, default its id); the
experiment id and the provenance id are the last two columns. Two markers, never a misleading
0: :data:`NOT_PREDICTED_MARK` when the model does not predict the class at all
(:func:`predicts`), :data:`UNDEFINED_MARK` when the metric is undefined (no ground truth of the
class in the test images, no instances in an overlap bin, no predictions to score). Columns
without a value in any row are dropped (``Table.dropped`` says which, for the caption). A row
may average several runs (seeds): pass a list of metrics dicts and the cell reads
``mean ± std``. Bold marks the strict best of a column only (:func:`_bold`).
"""
from __future__ import annotations

import csv
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

from overlapseg.utils.io import atomic_path, read_json

LOWER_IS_BETTER = {"FNo", "FPp"}
# Pixel accuracy is dominated by true negatives (it approaches the background fraction whatever
# the model does): printed, never bold.
NEVER_BOLD = {"accuracy"}

# metric family -> (scale, digits): every metric is a percentage; error rates (small numbers,
# lower is better) keep a second decimal so that 0.1 % and 0.4 % stay apart.
FAMILIES: dict[str, tuple[float, int]] = {"score": (100, 1), "rate": (100, 2)}
FAMILY_OF = {"FNo": "rate", "FPp": "rate"}  # every other key is a score


def number_format(key: str) -> tuple[float, int]:
    """(scale, digits) of a metric key, from its family."""
    return FAMILIES[FAMILY_OF.get(key, "score")]


# preset -> metric keys per category and categories (formats come from FAMILIES)
PRESETS: dict[str, dict] = {
    # Study default: mask + boundary AP and the matching metrics, both categories and mean.
    "default": {"keys": ["AP", "AP50", "AP75", "boundary_AP", "AJI", "Dice", "F1"],
                "categories": ["cytoplasm", "nucleus", "mean"]},
    # CC framework, Tables 1-3: 0.5AP^m, 0.7AP^m, 0.5AP^b_TP, 0.7AP^b_TP.
    "cc": {"keys": ["AP50", "AP70", "AP_TP_boundary@0.5", "AP_TP_boundary@0.7"], "categories": ["cytoplasm"]},
    # IRNet, Tables 1-2: AJI and F1 for cytoplasm and nuclei.
    "irnet": {"keys": ["AJI", "F1"], "categories": ["cytoplasm", "nucleus"]},
    # DoNet, Tables 1/3: mAP, Dice, F1, AJI, categories averaged.
    "donet": {"keys": ["AP", "Dice", "F1", "AJI"], "categories": ["mean"]},
    # DoNet Table 2 / ISBI 2014 challenge: Dice, TP_p, FN_o, FP_p.
    "isbi": {"keys": ["ISBI_Dice", "TPp", "FNo", "FPp"], "categories": ["cytoplasm"]},
    # Thesis, Tables 5.x: COCO mask AP family.
    "thesis": {"keys": ["AP", "AP50", "AP75", "APs", "APm", "APl"], "categories": ["cytoplasm"]},
    # Coarse-to-fine paper, Tables I-III: pixel seg / instance seg F1.
    "c2f": {"keys": ["pixel_seg_F1", "instance_seg_F1"], "categories": ["nucleus"]},
    # Overlap-binned AP and AJI (DoNet/IRNet: where overlapping cells are won or lost); one
    # column group per overlap-ratio bin of evaluate.overlap_bins, read from the metrics.
    "overlap": {"keys": ["AP", "AJI", "best_IoU", "recall50"], "categories": ["cytoplasm"], "by": "by_overlap"},
    # Thesis Table 5.11 error analysis: AP as predicted, with gt masks for matched predictions
    # ("w_gt_mask": how much is mask quality) and keeping matched predictions only ("gt_matched":
    # how much is false positives).
    "error_analysis": {"keys": ["AP", "AP50", "AP75"], "categories": ["cytoplasm"], "by": "error_analysis",
                       "groups": ["w_gt_mask", "gt_matched"]},
}
PIXEL_KEYS = ["accuracy", "precision", "recall", "F1", "IoU"]
PIXEL_CLASSES = ["cytoplasm", "nucleus", "overlap", "border", "background"]


NOT_PREDICTED = "not predicted"
UNDEFINED = "undefined"
NOT_PREDICTED_MARK = "\u2014"  # em dash: the model has no output for this class
UNDEFINED_MARK = "n/a"  # the metric has no value (no ground truth, no predictions, empty bin)
MARKS = {NOT_PREDICTED: NOT_PREDICTED_MARK, UNDEFINED: UNDEFINED_MARK}
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


def has_ground_truth(metrics: dict, category: str) -> bool:
    """False when the test images hold no ground-truth instance of ``category`` (``n_gt == 0``):
    every metric of it is then undefined, whatever the evaluator computed. Unknown: True."""
    if category == "mean":
        return True
    block = metrics.get(category)
    return not (isinstance(block, dict) and block.get("n_gt") == 0)


def pixel_has_ground_truth(metrics: dict, cls: str) -> bool:
    """False when no ground-truth pixel has class ``cls`` (recall is 0/0): then accuracy only
    counts true negatives (100 % for an empty prediction) and every metric of it is undefined."""
    block = (metrics.get("pixel") or {}).get(cls)
    return not (isinstance(block, dict) and "recall" in block and block["recall"] is None)


def ground_truth_categories(metrics: Sequence[Metrics]) -> list[str] | None:
    """Instance categories the test ground truth annotates (``n_gt > 0`` in the metrics files),
    None when no file records ``n_gt``. Every row of a table is scored on the same ground truth."""
    found: set[str] = set()
    known = False
    for m in metrics:
        for run in _runs(m):
            for c in CATEGORIES:
                n = (run.get(c) or {}).get("n_gt") if isinstance(run.get(c), dict) else None
                if n is not None:
                    known = True
                    if n > 0:
                        found.add(c)
    return [c for c in CATEGORIES if c in found] if known else None


@dataclass
class Table:
    """Formatted table: ``groups`` are the top header (category/class) spanning ``keys``.

    ``experiments`` are the experiment ids, ``labels`` the row names (default: the ids);
    ``paths[j]`` is where column j's number sits in a metrics JSON (before ``scale``);
    ``digits[j]`` its printed decimals; ``status[i][j]`` is "" for a number, else why the cell
    has no number (:data:`NOT_PREDICTED` or :data:`UNDEFINED`); ``stds`` (rows of several runs)
    the standard deviation of each cell, None for single runs; ``dropped`` the columns left out
    because no row has a value (``group/key``, reason); ``gt_categories`` the instance
    categories the test ground truth annotates (None: unknown).
    """

    experiments: list[str]
    columns: list[tuple[str, str]]  # (group, key)
    values: list[list[float | None]]  # scaled, rows x columns
    digits: list[int]
    provenance: list[str]
    bold: list[list[bool]]
    labels: list[str] | None = None
    paths: list[tuple[str, ...]] = field(default_factory=list)
    scale: float = 100.0
    status: list[list[str]] | None = None
    stds: list[list[float | None]] | None = None
    runs: list[int] | None = None
    dropped: list[tuple[str, str]] = field(default_factory=list)
    gt_categories: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = list(self.labels) if self.labels is not None else list(self.experiments)
        if len(self.labels) != len(self.experiments):
            raise ValueError(f"{len(self.labels)} row labels for {len(self.experiments)} experiments")
        if isinstance(self.digits, int):
            self.digits = [self.digits] * len(self.columns)
        if self.status is None:
            self.status = [["" if v is not None else UNDEFINED for v in row] for row in self.values]
        if self.runs is None:
            self.runs = [1] * len(self.experiments)

    def cell(self, i: int, j: int) -> str:
        v = self.values[i][j]
        if v is None:
            return MARKS.get(self.status[i][j], UNDEFINED_MARK)
        d = self.digits[j]
        s = None if self.stds is None else self.stds[i][j]
        return f"{v:.{d}f}" + ("" if s is None else f" ± {s:.{d}f}")

    @property
    def column_names(self) -> list[str]:
        """Column headers as in the CSV: ``group/key``."""
        return [f"{g}/{k}" for g, k in self.columns]

    @property
    def markers(self) -> set[str]:
        """The statuses of the cells shown without a number (for the caption's legend)."""
        return {s for row in self.status for s in row if s}


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


def _cell(metrics: Metrics, path: Sequence[str], scale: float, predicted, defined) -> tuple:
    """(mean, std or None, status) of one cell over the runs of a row.

    A list of runs gives their mean and sample std; a seed aggregate (a metrics dict with
    ``seed_std``, ``overlapseg.evaluate.seeds``) its stored mean and std. ``defined(run)``
    False (no ground truth of the class) makes the cell undefined whatever the number.
    """
    runs = _runs(metrics)
    if not all(defined(r) for r in runs):
        return None, None, UNDEFINED
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


def _build(metrics: Sequence[Metrics], experiments, labels, columns, paths, predicted, defined) -> Table:
    if len(metrics) != len(experiments):
        raise ValueError(f"{len(metrics)} metrics files for {len(experiments)} experiment names")
    formats = [number_format(k) for _, k in columns]
    cells = [[_cell(m, p, fmt[0], lambda r, c=c: predicted(r, c), lambda r, c=c: defined(r, c))
              for (c, _), p, fmt in zip(columns, paths, formats)] for m in metrics]
    keep, dropped = [], []
    for j, (g, k) in enumerate(columns):
        statuses = {row[j][2] for row in cells}
        if any(row[j][0] is not None for row in cells) or not cells:
            keep.append(j)
        else:  # no row has a number: say why in the caption instead of a column of markers
            dropped.append((f"{g}/{k}", NOT_PREDICTED if statuses == {NOT_PREDICTED} else UNDEFINED))
    columns = [columns[j] for j in keep]
    values = [[row[j][0] for j in keep] for row in cells]
    digits = [formats[j][1] for j in keep]
    status = [[row[j][2] for j in keep] for row in cells]
    several = any(not isinstance(m, dict) or "seed_std" in m for m in metrics)
    stds = [[row[j][1] for j in keep] for row in cells] if several else None
    return Table(list(experiments), columns, values, digits, [_provenance_id(m) for m in metrics],
                 _bold(columns, values, digits, status), labels, [tuple(paths[j]) for j in keep],
                 100.0, status, stds, [len(_runs(m)) for m in metrics], dropped,
                 ground_truth_categories(metrics))


def _bold(columns, values, digits, status) -> list[list[bool]]:
    """Bold the strict best of each column, compared as printed (rounded to its digits).

    Only meaningful values compete: numbers (not a marker), in a column that is not
    degenerate (:data:`NEVER_BOLD`); a column needs two or more of them, and the best must be
    unique: ties (e.g. every model at 0.0) and a lone value are never bold.
    """
    bold = [[False] * len(columns) for _ in values]
    for j, (_, key) in enumerate(columns):
        if key in NEVER_BOLD:
            continue
        rounded = [round(row[j], digits[j]) if row[j] is not None and status[i][j] == "" else None
                   for i, row in enumerate(values)]
        present = [v for v in rounded if v is not None]
        if len(present) < 2:
            continue
        best = min(present) if key in LOWER_IS_BETTER else max(present)
        if present.count(best) == 1:
            bold[rounded.index(best)][j] = True
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
                  lambda run, group: predicts(run, group.split(" ")[0]),
                  lambda run, group: has_ground_truth(run, group.split(" ")[0]))


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


def pixel_table(metrics: Sequence[Metrics], experiments: Sequence[str],
                labels: Sequence[str] | None = None, classes: Sequence[str] | None = None) -> Table:
    """Semantic pixel metrics (percent) of ``classes`` (default: those any experiment reports)."""
    if classes is None:
        present = {c for m in metrics for r in _runs(m) for c in (r.get("pixel") or {})}
        classes = [c for c in PIXEL_CLASSES if c in present and c != "background"]
    columns = [(c, k) for c in classes for k in PIXEL_KEYS]
    return _build(metrics, experiments, labels, columns, [("pixel", c, k) for c, k in columns],
                  _predicts_pixel, pixel_has_ground_truth)


# ----------------------------------------------------------------------------- rendering
def table_notes(t: Table) -> list[str]:
    """Legend lines every rendering carries: number format, bold rule, the markers the table
    uses and the columns left out (so an omitted column is never a silent gap)."""
    keys = {k for _, k in t.columns}
    fmt = "Numbers in percent, 1 decimal"
    rates = sorted(k for k in keys if FAMILY_OF.get(k) == "rate")
    if rates:
        fmt += f" ({', '.join(rates)}: error rates, 2 decimals, lower is better)"
    if t.stds is not None:
        fmt += "; mean ± std over seeds"
    notes = [fmt + "."]
    rule = "Bold: the strict best of a column among two or more values (ties and a lone value are not bold"
    notes.append(rule + ("; pixel accuracy, dominated by background pixels, never is)." if keys & NEVER_BOLD
                         else ")."))
    marks = t.markers
    if NOT_PREDICTED in marks:
        notes.append(f"{NOT_PREDICTED_MARK}: not predicted by this model (no output for this class).")
    if UNDEFINED in marks:
        notes.append(f"{UNDEFINED_MARK}: undefined (no ground truth of the class in the test images, "
                     "no predictions to score, or an empty overlap bin).")
    if t.dropped:
        by_reason: dict[str, list[str]] = {}
        for name, reason in t.dropped:
            by_reason.setdefault(reason, []).append(name)
        for reason, names in by_reason.items():
            why = "not predicted by any model" if reason == NOT_PREDICTED else "undefined in every row"
            notes.append(f"Columns omitted ({why}): {_compact(names)}.")
    return notes


def _compact(names: list[str]) -> str:
    """``cytoplasm/AP, cytoplasm/AP50`` -> ``cytoplasm/{AP, AP50}``; whole groups stay short."""
    groups: dict[str, list[str]] = {}
    for n in names:
        g, _, k = n.rpartition("/")
        groups.setdefault(g, []).append(k)
    return "; ".join(f"{g}/{{{', '.join(ks)}}}" if len(ks) > 1 else f"{g}/{ks[0]}" for g, ks in groups.items())


def caption_lines(t: Table, caption: str | Sequence[str] = "") -> list[str]:
    """The caption (a string or lines) followed by :func:`table_notes`."""
    lines = [caption] if isinstance(caption, str) else list(caption)
    return [line for line in lines if line] + table_notes(t)


def to_csv(t: Table) -> str:
    """label, one column per metric (a marker where not predicted / undefined), experiment, provenance."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label"] + t.column_names + ["experiment", "provenance"])
    for i, e in enumerate(t.experiments):
        w.writerow([t.labels[i]] + [t.cell(i, j) for j in range(len(t.columns))] + [e, t.provenance[i]])
    return buf.getvalue()


def _md(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: Table, caption: str | Sequence[str] = "") -> str:
    """Pipe table, then the caption and legend as paragraphs under it."""
    head = ["label"] + [f"{g} {k}" for g, k in t.columns] + ["experiment", "provenance"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(t.columns) + ["---", "---"]) + "|"]
    for i, e in enumerate(t.experiments):
        cells = [f"**{t.cell(i, j)}**" if t.bold[i][j] else t.cell(i, j) for j in range(len(t.columns))]
        prov = f"`{t.provenance[i]}`" if t.provenance[i] else ""
        lines.append("| " + " | ".join([_md(t.labels[i])] + cells + [f"`{e}`", prov]) + " |")
    if not t.columns:
        lines.append("\n(no metrics for this table)")
    return "\n".join(lines) + "\n\n" + "\n\n".join(caption_lines(t, caption)) + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
               "±": r"$\pm$", NOT_PREDICTED_MARK: "---"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in s)


def _header_groups(t: Table) -> list[tuple[str, int]]:
    groups: list[tuple[str, int]] = []
    for g, _ in t.columns:
        if groups and groups[-1][0] == g:
            groups[-1] = (g, groups[-1][1] + 1)
        else:
            groups.append((g, 1))
    return groups


def to_latex(t: Table, caption: str | Sequence[str] = "") -> str:
    """booktabs tabular: a category row spanning its metrics, then metric names; the caption
    and legend in ``\\caption``."""
    n = len(t.columns)
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{_tex(' '.join(caption_lines(t, caption)))}}}"]
    lines += [rf"\begin{{tabular}}{{l{'r' * n}ll}}", r"\toprule"]
    top, rules, col = [""], [], 2
    for g, span in _header_groups(t):
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
            c = _tex(t.cell(i, j))
            cells.append(rf"\textbf{{{c}}}" if t.bold[i][j] else c)
        lines.append(" & ".join([_tex(t.labels[i])] + cells + [rf"\texttt{{{_tex(e)}}}",
                                                              rf"\texttt{{{_tex(t.provenance[i])}}}"])
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


_HTML_STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:12px;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #ddd;white-space:nowrap}
thead th{border-bottom:1px solid #999;background:#f6f6f6}
thead tr:first-child th{border-bottom:1px solid #ccc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.mark{text-align:center;color:#888}
td.id{font-family:monospace;font-size:11px;color:#666}
caption{caption-side:top;text-align:left;font-weight:600;font-size:15px;padding-bottom:6px}
p.note{font-size:12px;color:#444;max-width:60em;margin:4px 0}"""


def to_html(t: Table, caption: str | Sequence[str] = "") -> str:
    """A standalone HTML page: the table (category header spanning its metrics, bold best as
    ``<strong>``), the first caption line as ``<caption>``, the rest and the legend below.
    Shown inline by ``snakemake --report``."""
    lines = caption_lines(t, caption)
    user = [line for line in ([caption] if isinstance(caption, str) else list(caption)) if line]
    title, notes = (user[0], lines[1:]) if user else ("", lines)
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(title or 'table')}</title>", f"<style>{_HTML_STYLE}</style></head><body>",
           "<table>"]
    if title:
        out.append(f"<caption>{esc(title)}</caption>")
    out.append("<thead><tr><th></th>" + "".join(
        f'<th colspan="{span}">{esc(g)}</th>' for g, span in _header_groups(t)) + "<th></th><th></th></tr>")
    out.append("<tr><th>method</th>" + "".join(f"<th>{esc(k)}</th>" for _, k in t.columns)
               + "<th>experiment</th><th>provenance</th></tr></thead>")
    out.append("<tbody>")
    for i, e in enumerate(t.experiments):
        cells = []
        for j in range(len(t.columns)):
            text = esc(t.cell(i, j))
            if t.status[i][j]:
                cells.append(f'<td class="mark" title="{esc(t.status[i][j])}">{text}</td>')
            else:
                cells.append(f'<td class="num">{"<strong>" + text + "</strong>" if t.bold[i][j] else text}</td>')
        out.append(f"<tr><th scope=\"row\" style=\"text-align:left\">{esc(t.labels[i])}</th>" + "".join(cells)
                   + f'<td class="id">{esc(e)}</td><td class="id">{esc(t.provenance[i])}</td></tr>')
    out.append("</tbody></table>")
    if not t.columns:
        out.append('<p class="note">(no metrics for this table)</p>')
    out += [f'<p class="note">{esc(n)}</p>' for n in notes]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


TABLE_SUFFIXES = (".csv", ".md", ".tex", ".html")


def write_table(t: Table, stem: str | os.PathLike, caption: str | Sequence[str] = "") -> list[Path]:
    """Write ``stem``.csv/.md/.tex/.html atomically (the caption in all but the CSV); returns the paths."""
    stem = Path(stem)
    out = []
    for suffix, render in ((".csv", lambda: to_csv(t)), (".md", lambda: to_markdown(t, caption)),
                           (".tex", lambda: to_latex(t, caption)), (".html", lambda: to_html(t, caption))):
        path = stem.with_name(stem.name + suffix)
        _write_text(path, render())
        out.append(path)
    return out


def has_pixel(metrics: Sequence[dict]) -> bool:
    return any(m.get("pixel") for m in metrics)


def write_tables(metrics_paths: Sequence[str | os.PathLike], experiments: Sequence[str],
                 out_dir: str | os.PathLike, preset: str = "default", pixel: bool | None = None,
                 dataset: str = "", labels: Sequence[str] | None = None,
                 caption_info: dict | None = None) -> list[Path]:
    """metrics.{csv,md,tex,html} (+ pixel.* if ``pixel`` or, when None, if any has pixel metrics).

    ``caption_info``: :func:`overlapseg.report.captions.table_caption`'s description of the
    dataset, split and budgets (optional; without it the caption names the dataset only)."""
    from overlapseg.report.captions import table_caption

    metrics = [read_json(p) for p in metrics_paths]
    out_dir = Path(out_dir)
    info = {"dataset": dataset, **(caption_info or {})}
    label = f" on {info['dataset']}" if info.get("dataset") else ""
    table = metrics_table(metrics, experiments, preset, labels)
    written = write_table(table, out_dir / "metrics",
                          table_caption(f"Instance segmentation metrics{label} (preset {preset})", table, info))
    if pixel or (pixel is None and has_pixel(metrics)):
        table = pixel_table(metrics, experiments, labels=labels)
        written += write_table(table, out_dir / "pixel",
                               table_caption(f"Pixel-level semantic metrics{label}", table, info))
    return written

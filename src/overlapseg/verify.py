"""Determinism check: compare a from-scratch rerun of some experiments with the main run.

The workflow's ``verify`` rule reruns ``verify.experiments`` in a separate directory and calls
:func:`compare_runs` on the two trees (same relative paths). With ``tolerance`` 0 (CPU) every
model, prediction and metrics file must be byte-identical and every table cell equal; with a
tolerance (GPU runs, docs/reproducibility.md) metric values may differ by that much, table
cells by 100 x tolerance plus one unit of the last printed digit, and differing models and
predictions are reported (models with their largest weight difference) without failing.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterable

from overlapseg.utils.io import read_json, sha256_file

FILE_KINDS = ("models", "predictions", "metrics", "tables")


def _sha(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def max_weight_difference(a: str | os.PathLike, b: str | os.PathLike) -> float | None:
    """Largest |difference| between the weights of two model.pt files (None: not comparable)."""
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False).get("state_dict", {})
    sb = torch.load(b, map_location="cpu", weights_only=False).get("state_dict", {})
    if sa.keys() != sb.keys():
        return None
    worst = 0.0
    for k in sa:
        if sa[k].shape != sb[k].shape:
            return None
        if sa[k].is_floating_point():
            worst = max(worst, float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0)
        elif not torch.equal(sa[k], sb[k]):
            return math.inf
    return worst


def metric_differences(a, b, tolerance: float, where: str = "") -> list[str]:
    """Leaves of two metrics JSONs that differ by more than ``tolerance`` (provenance ignored)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k == "provenance" and not where:
                continue
            if k not in a or k not in b:
                out.append(f"{where}{k}: only in {'main' if k in a else 'rerun'}")
                continue
            out += metric_differences(a[k], b[k], tolerance, f"{where}{k}.")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where.rstrip('.')}: {len(a)} vs {len(b)} entries"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += metric_differences(x, y, tolerance, f"{where}{i}.")
        return out
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return [] if abs(a - b) <= tolerance else [f"{where.rstrip('.')}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{where.rstrip('.')}: {a!r} vs {b!r}"]


def _read_rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["experiment"]: row for row in csv.DictReader(f)}


def _cell_equal(a: str, b: str, tolerance: float) -> bool:
    if a == b:
        return True
    if tolerance <= 0:
        return False
    try:
        x, y = float(a.split(" ")[0]), float(b.split(" ")[0])
    except ValueError:
        return False
    digits = len(a.split(" ")[0].partition(".")[2])
    return abs(x - y) <= 100 * tolerance + 10 ** -digits + 1e-12


def compare_table_cells(main_csv: Path, rerun_csv: Path, experiments: Iterable[str],
                        tolerance: float = 0.0) -> list[str]:
    """Cells of ``experiments``' rows that differ. A column one table lacks (tables drop columns
    without a value in any row, and the rerun has fewer rows) matches only a marker cell (not
    predicted / undefined) of the other; otherwise it reads ``n/a``."""
    from overlapseg.report.tables import MARKS

    main, rerun = _read_rows(main_csv), _read_rows(rerun_csv)
    out = []
    for e in experiments:
        if e not in main:
            continue
        if e not in rerun:
            out.append(f"row {e!r} missing in the rerun")
            continue
        for col in list(main[e]) + [c for c in rerun[e] if c not in main[e]]:
            value, other = main[e].get(col), rerun[e].get(col)
            if value is None or other is None:
                if (value if other is None else other) in MARKS.values():
                    continue
                value, other = value or "n/a", other or "n/a"
            if not _cell_equal(value, other, tolerance):
                out.append(f"row {e!r} column {col!r}: {value!r} vs {other!r}")
    return out


def compare_runs(main_root: str | os.PathLike, rerun_root: str | os.PathLike, files: dict,
                 experiments: list[str], tolerance: float = 0.0) -> dict:
    """Report comparing the two trees.

    ``files``: ``models``, ``predictions``, ``metrics``, ``tables`` (compared as whole files)
    and ``table_cells`` (tables holding other experiments too: only ``experiments``' rows
    compared, cell by cell), each a list of paths relative to both roots.
    """
    main_root, rerun_root = Path(main_root), Path(rerun_root)
    entries, problems, notes = [], [], []
    for kind in FILE_KINDS:
        for rel in files.get(kind, []):
            a, b = main_root / rel, rerun_root / rel
            ha, hb = _sha(a), _sha(b)
            entry = {"kind": kind, "path": rel, "main_sha256": ha, "rerun_sha256": hb}
            if ha is None or hb is None:
                entry["status"] = f"missing in the {'main run' if ha is None else 'rerun'}"
                problems.append(f"{rel}: {entry['status']}")
            elif ha == hb:
                entry["status"] = "identical"
            elif tolerance <= 0:
                entry["status"] = "differs"
                why = ""
                if kind == "metrics":  # name what differs: a metric, or only the provenance record
                    diffs = metric_differences(read_json(a), read_json(b), 0.0)
                    prov = [d for d in metric_differences(read_json(a).get("provenance"),
                                                          read_json(b).get("provenance"), 0.0, "provenance.")
                            if not d.startswith("provenance.id:")]
                    entry["differences"] = diffs + prov
                    why = (f" ({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''})" if diffs
                           else f" (only its provenance differs: {'; '.join(prov[:3])})" if prov else "")
                problems.append(f"{rel}: sha256 {ha[:12]} (main) != {hb[:12]} (rerun){why}")
            elif kind == "metrics":
                diffs = metric_differences(read_json(a), read_json(b), tolerance)
                entry["status"] = "within tolerance" if not diffs else "differs"
                entry["differences"] = diffs
                problems += [f"{rel}: {d}" for d in diffs]
            elif kind == "tables" and rel.endswith(".csv"):
                diffs = compare_table_cells(a, b, list(_read_rows(a)), tolerance)
                entry["status"] = "within tolerance" if not diffs else "differs"
                entry["differences"] = diffs
                problems += [f"{rel}: {d}" for d in diffs]
            else:  # models, predictions, md/tex tables under a tolerance: reported, not failed
                entry["status"] = "differs (allowed under tolerance)"
                if kind == "models":
                    entry["max_weight_difference"] = max_weight_difference(a, b)
                notes.append(f"{rel}: {entry['status']}")
            entries.append(entry)
    cells = []
    for rel in files.get("table_cells", []):
        a, b = main_root / rel, rerun_root / rel
        if not a.is_file() or not b.is_file():
            diffs = [f"missing in the {'main run' if not a.is_file() else 'rerun'}"]
        else:
            diffs = compare_table_cells(a, b, experiments, tolerance)
        cells.append({"path": rel, "experiments": experiments, "differences": diffs})
        problems += [f"{rel}: {d}" for d in diffs]
    return {"ok": not problems, "tolerance": tolerance, "experiments": experiments,
            "main": str(main_root), "rerun": str(rerun_root), "files": entries, "table_rows": cells,
            "mismatches": problems, "notes": notes,
            "compared": {"files": len(entries), "tables_by_row": len(cells)}}


def training_threads(root: str | os.PathLike, model_files: Iterable[str]) -> dict[str, int | None]:
    """Threads each training used (timing.json): a differing count can change CPU results."""
    out = {}
    for rel in model_files:
        timing = Path(root) / Path(rel).parent / "timing.json"
        out[rel] = read_json(timing).get("threads") if timing.is_file() else None
    return out


def finish(report: dict, out_dir: str | os.PathLike, report_file: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Write ``report_file`` (default ``out_dir``/report.json) if the runs match, else
    ``out_dir``/mismatch.json; returns (ok, the message to print)."""
    from overlapseg.utils.io import write_json

    out_dir = Path(out_dir)
    mismatch_file = out_dir / "mismatch.json"
    if report["ok"]:
        if mismatch_file.exists():
            mismatch_file.unlink()
        write_json(report_file or out_dir / "report.json", report)
        return True, (f"verify: {report['compared']['files']} files and {report['compared']['tables_by_row']} "
                      f"tables by row match the main run")
    write_json(mismatch_file, report)
    lines = [f"verify: {len(report['mismatches'])} difference(s) between the main run and the rerun of "
             f"{', '.join(report['experiments'])} in {report['rerun']} (details: {mismatch_file}):"]
    lines += [f"  {m}" for m in report["mismatches"][:20]]
    if len(report["mismatches"]) > 20:
        lines.append(f"  ... and {len(report['mismatches']) - 20} more")
    threads = report.get("training_threads") or {}
    if threads and threads.get("main") != threads.get("rerun"):
        lines.append(f"  note: training threads differ (main {threads['main']}, rerun {threads['rerun']}); "
                     "run verify with the main run's --cores")
    return False, "\n".join(lines)

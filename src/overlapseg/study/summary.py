"""The end-of-run summary the Snakefile prints (``onsuccess`` / ``onerror``): what was written
where, which optional datasets were skipped, and the wall time."""
from __future__ import annotations

import time
from pathlib import Path

from overlapseg.study.plan import StudyPlan


def _fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def run_summary(plan: StudyPlan, started: float, ok: bool, log: str | None = None,
                now: float | None = None) -> str:
    """Lines for the console: tables and figures of the study that exist, skipped optional
    datasets (with why), the wall time, and on failure where the full log is."""
    wall = _fmt_seconds((now or time.time()) - started)
    outputs = [p for p in plan.final_outputs() if Path(p).exists()]
    tables = sorted(str(p.with_suffix("")) for ds in plan.evaluated_datasets()
                    for p in Path(f"results/{ds}/tables").glob("*.csv"))
    figures = sorted(p for p in outputs if p.startswith("results/figures/") and p.endswith(".png"))
    lines = [f"overlapseg: {'finished' if ok else 'FAILED'} after {wall} (wall time of this run)"]
    if tables:
        folders = sorted({str(Path(t).parent) for t in tables})
        lines.append(f"  tables ({len(tables)}, .csv/.md/.tex): {', '.join(folders)}")
    if figures:
        lines.append(f"  figures ({len(figures)}, .png/.pdf): results/figures/")
    segment = [p for p in outputs if p.startswith("results/segment/")]
    if segment:
        lines.append(f"  segmented image folders: {', '.join(segment)}")
    for name, why in plan.skipped.items():
        lines.append(f"  skipped optional dataset {name!r}: {why} (its columns and tables are absent)")
    if not ok:
        logs = ", ".join(log) if isinstance(log, (list, tuple)) else (log or ".snakemake/log/")
        lines.append(f"  the failing job printed its one-line error above; full log: {logs}")
    lines.append("  audit one number: overlapseg audit results/<dataset>/tables/<table>.csv --row LABEL --column METRIC")
    return "\n".join(lines)

"""Figure files every layer writes the same way: matplotlib's Agg backend, PNG and PDF written
atomically with creation metadata removed (and a fixed SVG hash salt) so reruns give
byte-identical files."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from overlapseg.utils.io import atomic_path  # noqa: E402

plt.rcParams["svg.hashsalt"] = "overlapseg"


def save_figure(fig, stem: str | os.PathLike) -> list[Path]:
    """Write ``stem``.png (150 dpi) and ``stem``.pdf atomically without timestamps."""
    stem = Path(stem)
    out = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "ModDate": None})):
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out

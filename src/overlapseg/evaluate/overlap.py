"""How much each ground-truth instance is overlapped by other cells, and binning by that ratio.

This is the study's central breakdown: metrics for isolated vs. heavily overlapped cells.
* cytoplasm: fraction of the cell's (amodal) area also covered by at least one other cell;
* nucleus: fraction of the nucleus covered by cells other than its own (``parent_id``; if
  absent, the cell covering most of the nucleus is taken as its own).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils

DEFAULT_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.0))


def _stack(rles: list[dict]) -> np.ndarray:
    return np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool)


def overlap_ratios(cells: list[dict], nuclei: list[dict]) -> dict[int, float]:
    """Annotation id -> overlap ratio for the cytoplasm and nucleus annotations of one image."""
    out: dict[int, float] = {}
    if cells:
        cm = _stack([a["segmentation"] for a in cells])
        count = cm.sum(axis=0, dtype=np.int32)
        covered = (cm & (count >= 2)[None]).sum(axis=(1, 2))
        for a, cov, area in zip(cells, covered, cm.sum(axis=(1, 2))):
            out[a["id"]] = float(cov / area) if area else 0.0
    if nuclei:
        nm = _stack([a["segmentation"] for a in nuclei])
        if not cells:
            return {**out, **{a["id"]: 0.0 for a in nuclei}}
        cell_index = {a["id"]: k for k, a in enumerate(cells)}
        for a, m in zip(nuclei, nm):
            inside = cm[:, m].sum(axis=1)  # pixels of this nucleus under each cell
            own = cell_index.get(a.get("parent_id"))
            if own is None:
                own = int(np.argmax(inside))
            others = count[m] - cm[own, m]
            area = int(m.sum())
            out[a["id"]] = float(np.count_nonzero(others > 0) / area) if area else 0.0
    return out


def bin_index(ratio: float, bins: Sequence[Sequence[float]]) -> int:
    """Index of the bin holding ``ratio``: [lo, hi) except that the last bin includes hi."""
    for k, (lo, hi) in enumerate(bins):
        if lo <= ratio < hi or (k == len(bins) - 1 and ratio == hi):
            return k
    raise ValueError(f"overlap ratio {ratio} outside all bins {list(bins)}")


def bin_label(lo: float, hi: float, last: bool) -> str:
    return f"[{lo:g},{hi:g}{']' if last else ')'}"


def check_bins(bins) -> list[tuple[float, float]]:
    """Validate contiguous bins covering [0, 1]; accepts (lo, hi) pairs or a flat list of edges."""
    bins = list(bins)
    if bins and all(isinstance(b, (int, float)) for b in bins):
        bins = list(zip(bins[:-1], bins[1:]))
    out = [(float(lo), float(hi)) for lo, hi in bins]
    if not out or out[0][0] != 0.0 or out[-1][1] != 1.0:
        raise ValueError(f"overlap bins must start at 0 and end at 1, got {out}")
    for (a, b), (c, _) in zip(out, out[1:]):
        if b != c:
            raise ValueError(f"overlap bins must be contiguous, got {out}")
    if any(lo >= hi for lo, hi in out):
        raise ValueError(f"overlap bins must have lo < hi, got {out}")
    return out

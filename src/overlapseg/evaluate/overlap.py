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

from overlapseg.evaluate.matching import pair_table

DEFAULT_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.0))


def _covered_area(rle: dict, others: list[dict]) -> int:
    """Pixels of ``rle`` covered by at least one of ``others`` (RLE merges, nothing decoded)."""
    if not others:
        return 0
    cover = mask_utils.merge(others) if len(others) > 1 else others[0]
    return int(mask_utils.area(mask_utils.merge([rle, cover], intersect=True)))


def _touching(a: list[dict], b: list[dict]) -> np.ndarray:
    """(len(a), len(b)) bool: which pairs share pixels. pycocotools' IoU checks boxes first,
    so only box-overlapping pairs cost a run merge."""
    if not a or not b:
        return np.zeros((len(a), len(b)), dtype=bool)
    return np.asarray(mask_utils.iou([x["segmentation"] for x in a], [x["segmentation"] for x in b],
                                     [0] * len(b)), dtype=float) > 0


def overlap_ratios(cells: list[dict], nuclei: list[dict]) -> dict[int, float]:
    """Annotation id -> overlap ratio for the cytoplasm and nucleus annotations of one image.

    Computed on RLEs from the pairs that overlap (a dense tile of thousands of cells never
    decodes a full-frame mask).
    """
    out: dict[int, float] = {}
    cell_rles = [a["segmentation"] for a in cells]
    touch = _touching(cells, cells)
    for k, a in enumerate(cells):
        area = int(mask_utils.area(cell_rles[k]))
        others = [cell_rles[j] for j in np.flatnonzero(touch[k]) if j != k]
        out[a["id"]] = _covered_area(cell_rles[k], others) / area if area else 0.0
    if nuclei and not cells:
        return {**out, **{a["id"]: 0.0 for a in nuclei}}
    if nuclei:
        inside = pair_table([a["segmentation"] for a in nuclei], cell_rles).inter  # nucleus x cell pixels
        cell_index = {a["id"]: k for k, a in enumerate(cells)}
        for i, a in enumerate(nuclei):
            own = cell_index.get(a.get("parent_id"))
            if own is None:  # the cell covering most of the nucleus (the first one on ties)
                own = int(np.argmax(inside[i]))
            area = int(mask_utils.area(a["segmentation"]))
            others = [cell_rles[j] for j in np.flatnonzero(inside[i] > 0) if j != own]
            out[a["id"]] = _covered_area(a["segmentation"], others) / area if area else 0.0
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

"""Pixel-level metrics.

* Semantic maps (thesis, Ch. 5 tables): per class binary confusion counts summed over all
  test images, then accuracy, precision, recall, F1 and IoU. Ground truth maps come from
  ``overlapseg.data.semantic.semantic_targets`` so "overlap" and "border" mean the same as in
  training.
* Coarse-to-fine paper (Sec. IV, evaluation measures): "pixel seg" F1 counts every predicted
  foreground pixel lying on ground-truth foreground as a true positive; "instance seg" F1
  counts only pixels inside predictions matched to a gt instance at IoU >= 0.5.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.canonical import DataError
from overlapseg.data.semantic import SEMANTIC_CLASSES


def binary_counts(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[tp, fp, fn, tn] of two same-shape binary maps."""
    g, p = gt.astype(bool).ravel(), pred.astype(bool).ravel()
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return np.array([tp, fp, fn, g.size - tp - fp - fn], dtype=np.int64)


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def counts_to_metrics(counts: np.ndarray) -> dict[str, float | None]:
    """accuracy, precision, recall, F1, IoU from [tp, fp, fn, tn]; None where undefined."""
    tp, fp, fn, tn = (int(v) for v in counts)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
        "IoU": _ratio(tp, tp + fp + fn),
    }


def load_semantic(path: str | os.PathLike, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Read one ``{name}.npz`` of binary maps; checks class names, shapes and values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "semantic prediction file not found")
    try:
        with np.load(path) as npz:
            maps = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad files
        raise DataError(path, f"unreadable npz ({exc})") from None
    out = {}
    for k, v in maps.items():
        if k not in SEMANTIC_CLASSES:
            continue
        if v.shape != tuple(shape):
            raise DataError(path, f"map {k!r} has shape {v.shape}, expected {tuple(shape)}")
        if v.size and (v.min() < 0 or v.max() > 1):
            raise DataError(path, f"map {k!r} is not binary (values in [{v.min()}, {v.max()}])")
        out[k] = v.astype(bool)
    if not out:
        raise DataError(path, f"no semantic maps among {', '.join(SEMANTIC_CLASSES)}")
    return out


class SemanticAccumulator:
    """Sums per-class confusion counts over images; every file must carry the same classes."""

    def __init__(self):
        self.counts: dict[str, np.ndarray] = {}
        self.classes: set[str] | None = None

    def add(self, gt_maps: dict[str, np.ndarray], pred_maps: dict[str, np.ndarray], source: str) -> None:
        if self.classes is None:
            self.classes = set(pred_maps)
        elif set(pred_maps) != self.classes:
            raise DataError(source, f"classes {sorted(pred_maps)} differ from the other files' "
                            f"{sorted(self.classes)}")
        for k, pred in pred_maps.items():
            self.counts[k] = self.counts.get(k, 0) + binary_counts(gt_maps[k], pred)

    def metrics(self) -> dict[str, dict]:
        return {k: counts_to_metrics(v) for k, v in sorted(self.counts.items())}


def _union(rles: list[dict], h: int, w: int) -> dict:
    if not rles:
        return mask_utils.encode(np.zeros((h, w), dtype=np.uint8, order="F"))
    return mask_utils.merge(rles) if len(rles) > 1 else rles[0]


def seg_f1_counts(gt_rles: list[dict], dt_rles: list[dict], pairs: tuple[np.ndarray, np.ndarray],
                  h: int, w: int) -> np.ndarray:
    """[tp_pixel, tp_instance, predicted pixels, gt pixels] of one image/category.

    Pixels are counted on the union of instances (foreground), as in a semantic mask.
    ``pairs`` are the (gt, dt) indices matched at IoU >= 0.5.
    """
    ug, ud = _union(gt_rles, h, w), _union(dt_rles, h, w)
    tp = mask_utils.area(mask_utils.merge([ug, ud], intersect=True))
    inside = [mask_utils.merge([gt_rles[g], dt_rles[d]], intersect=True) for g, d in zip(*pairs)]
    tp_inst = mask_utils.area(_union(inside, h, w)) if inside else 0
    return np.array([tp, tp_inst, mask_utils.area(ud), mask_utils.area(ug)], dtype=np.int64)


def seg_f1(counts: np.ndarray) -> dict[str, float | None]:
    """pixel_seg_F1 and instance_seg_F1 from summed ``seg_f1_counts``."""
    tp, tp_inst, pred, gt = (int(v) for v in counts)
    return {"pixel_seg_F1": _ratio(2 * tp, pred + gt), "instance_seg_F1": _ratio(2 * tp_inst, pred + gt)}

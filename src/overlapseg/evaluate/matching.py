"""Instance-matching metrics on one image: AJI, matched Dice, F1 and the ISBI 2014 measures.

All functions work on per-pair pixel counts (``inter`` (n_gt, n_dt), areas), so amodal,
overlapping instances are handled naturally and nothing is decoded. ``pair_table`` gets the
counts from pycocotools' RLE IoU: |A∩B| = IoU (|A|+|B|) / (1+IoU), rounded (exact for
integer pixel counts in float64).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment


@dataclass
class PairTable:
    """Pixel counts between the gt (rows) and predicted (columns) instances of one image/category."""

    inter: np.ndarray  # (n_gt, n_dt) intersection pixels
    gt_area: np.ndarray  # (n_gt,)
    dt_area: np.ndarray  # (n_dt,)

    @property
    def union(self) -> np.ndarray:
        return self.gt_area[:, None] + self.dt_area[None, :] - self.inter

    @property
    def iou(self) -> np.ndarray:
        u = self.union
        return np.divide(self.inter, u, out=np.zeros_like(self.inter, dtype=float), where=u > 0)

    @property
    def dice(self) -> np.ndarray:
        s = self.gt_area[:, None] + self.dt_area[None, :]
        return np.divide(2 * self.inter, s, out=np.zeros_like(self.inter, dtype=float), where=s > 0)

    def subset(self, gt_idx=None, dt_idx=None) -> "PairTable":
        g = slice(None) if gt_idx is None else np.asarray(gt_idx, dtype=int)
        d = slice(None) if dt_idx is None else np.asarray(dt_idx, dtype=int)
        return PairTable(self.inter[g][:, d], self.gt_area[g], self.dt_area[d])


def rle_areas(rles: list[dict]) -> np.ndarray:
    """Pixel areas (float) of RLEs, one call each: pycocotools' ``area`` on a list of 256 or
    more RLEs overflows (its uint8 length bookkeeping under numpy 2)."""
    return np.array([mask_utils.area(r) for r in rles], dtype=float)


def pair_table(gt_rles: list[dict], dt_rles: list[dict]) -> PairTable:
    """Intersections and areas of every gt/prediction pair from RLEs.

    pycocotools' ``iou`` compares bounding boxes first and merges runs only for pairs whose
    boxes overlap, so the cost grows with the overlapping pairs, not with n_gt x n_dt masks.
    """
    ga, da = rle_areas(gt_rles), rle_areas(dt_rles)
    if len(ga) == 0 or len(da) == 0:
        return PairTable(np.zeros((len(ga), len(da))), ga, da)
    iou = np.asarray(mask_utils.iou(gt_rles, dt_rles, [0] * len(dt_rles)), dtype=float)
    inter = np.rint(iou * (ga[:, None] + da[None, :]) / (1.0 + iou))
    return PairTable(inter, ga, da)


def match(quality: np.ndarray, threshold: float, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one gt/prediction matching maximising total ``quality`` among pairs above threshold.

    Returns (gt indices, dt indices) of the matched pairs (Hungarian assignment, scipy).
    ``strict``: require quality > threshold instead of >=.
    """
    if quality.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    ok = quality > threshold if strict else quality >= threshold
    weights = np.where(ok, quality, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


def aji_counts(table: PairTable, gt_sel: np.ndarray | None = None,
               dt_sel: np.ndarray | None = None) -> tuple[float, float]:
    """Aggregated intersection C and union U of the Aggregated Jaccard Index (Kumar et al. 2017).

    Every gt instance takes the prediction with the highest IoU (if any overlaps) and adds
    their intersection to C and union to U (a prediction may serve several gt, as in the
    original definition); a gt with no overlapping prediction adds its area to U; every
    prediction paired with no gt adds its area to U. ``gt_sel``/``dt_sel`` (bool masks)
    restrict which gt are counted and which unpaired predictions are charged (overlap bins);
    pairing always considers all predictions.
    """
    n_gt, n_dt = table.inter.shape
    gt_sel = np.ones(n_gt, bool) if gt_sel is None else np.asarray(gt_sel, bool)
    dt_sel = np.ones(n_dt, bool) if dt_sel is None else np.asarray(dt_sel, bool)
    used = np.zeros(n_dt, dtype=bool)
    c = u = 0.0
    if n_dt:
        iou = table.iou
        best = np.argmax(iou, axis=1)
        has = iou[np.arange(n_gt), best] > 0
        used[best[has]] = True
        sel = gt_sel & has
        c += float(table.inter[np.flatnonzero(sel), best[sel]].sum())
        u += float(table.union[np.flatnonzero(sel), best[sel]].sum())
        u += float(table.gt_area[gt_sel & ~has].sum())
    else:
        u += float(table.gt_area[gt_sel].sum())
    u += float(table.dt_area[dt_sel & ~used].sum())
    return c, u


def aji(table: PairTable) -> float | None:
    """AJI of one image; None when there is neither ground truth nor prediction."""
    c, u = aji_counts(table)
    return c / u if u > 0 else None


@dataclass
class DetectionCounts:
    """Running sums for the instance-level metrics over images (micro-averaged)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    dice_sum: float = 0.0  # over pairs matched at IoU >= 0.5
    n_gt: int = 0
    isbi_good: int = 0
    isbi_dice_sum: float = 0.0
    isbi_tpp_sum: float = 0.0
    isbi_fpp_sum: float = 0.0

    def add(self, table: PairTable, image_pixels: int, iou_threshold: float = 0.5,
            isbi_threshold: float = 0.7, isbi_criterion: str = "iou") -> tuple[np.ndarray, np.ndarray]:
        """Add one image; returns the IoU>=threshold matched (gt, dt) pairs."""
        n_gt, n_dt = table.inter.shape
        gi, di = match(table.iou, iou_threshold)
        self.tp += len(gi)
        self.fp += n_dt - len(gi)
        self.fn += n_gt - len(gi)
        self.dice_sum += float(table.dice[gi, di].sum())
        self.n_gt += n_gt
        # ISBI 2014 (Lu et al., IEEE TMI 2015): a gt cell is well segmented when its matched
        # segmentation has Dice (or IoU) above 0.7; pixel rates are averaged over those cells.
        quality = table.dice if isbi_criterion == "dice" else table.iou
        g2, d2 = match(quality, isbi_threshold, strict=True)
        self.isbi_good += len(g2)
        self.isbi_dice_sum += float(table.dice[g2, d2].sum())
        inter = table.inter[g2, d2]
        self.isbi_tpp_sum += float((inter / table.gt_area[g2]).sum())
        negatives = image_pixels - table.gt_area[g2]
        self.isbi_fpp_sum += float(((table.dt_area[d2] - inter) / np.maximum(negatives, 1)).sum())
        return gi, di

    def metrics(self) -> dict[str, float | None]:
        den = 2 * self.tp + self.fp + self.fn
        return {
            "Dice": self.dice_sum / self.tp if self.tp else None,
            "F1": 2 * self.tp / den if den else None,
            "precision": self.tp / (self.tp + self.fp) if self.tp + self.fp else None,
            "recall": self.tp / (self.tp + self.fn) if self.tp + self.fn else None,
            "ISBI_Dice": self.isbi_dice_sum / self.isbi_good if self.isbi_good else None,
            "FNo": 1.0 - self.isbi_good / self.n_gt if self.n_gt else None,
            "TPp": self.isbi_tpp_sum / self.isbi_good if self.isbi_good else None,
            "FPp": self.isbi_fpp_sum / self.isbi_good if self.isbi_good else None,
        }

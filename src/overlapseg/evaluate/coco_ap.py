"""COCO mask AP through pycocotools, plus Boundary AP and attribute-binned AP on the same matcher.

Mask AP is pycocotools' ``COCOeval`` unchanged. Boundary AP (Cheng et al. 2021) swaps only the
IoU that ``COCOeval`` matches with: ``min(mask IoU, boundary IoU)``, which is how the reference
Boundary IoU API subclasses ``COCOeval``. AP for instance groups (overlap bins) reuses
``COCOeval``'s area-range mechanism: each instance's ``area`` is replaced by its group index
and each area range selects one group, so ignore/match rules stay pycocotools' own.

Two departures from stock ``COCOeval`` settings, both for dense images (issue 31):
* ``maxDets`` is one number, by default at least the largest number of predictions of one
  image and category (COCO's 100 silently dropped the lowest-scored predictions of images
  with more instances: 200 perfect predictions scored AP 0.505);
* ``SparseEval.evaluateImg`` is COCO's greedy matching visiting only the ground truths a
  detection reaches the lowest IoU threshold with, instead of every pair (time grows with
  the overlapping pairs; results identical, checked against the stock loop in the tests).
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Callable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

AP_KEYS = ("AP", "AP50", "AP70", "AP75", "APs", "APm", "APl", "AR")
COCO_MAX_DETS = 100  # COCO's own per-image limit, kept as the floor of ``max_dets``


def make_coco(images: list[dict], categories: list[dict], anns: list[dict]) -> COCO:
    """In-memory COCO object (no stdout chatter); works for empty annotation lists too."""
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class SparseEval(COCOeval):
    """COCOeval whose per-image matching visits, for each detection, only the ground truths
    with IoU >= the lowest IoU threshold (the only ones it can match), in COCO's order.

    Same greedy rule as ``COCOeval.evaluateImg`` (score order; the unmatched, non-ignored gt
    with the highest IoU wins, ties to the later one; crowd gt stay matchable; a detection
    matched to a regular gt stops at the ignored ones), so outputs are identical; the stock
    loop costs thresholds x detections x ground truths Python steps per image and area range.
    """

    def evaluateImg(self, imgId, catId, aRng, maxDet):  # noqa: N802,N803 - pycocotools API
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return None
        for g in gt:
            g["_ignore"] = 1 if g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1] else 0
        gtind = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gtind]
        dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dtind[0:maxDet]]
        iscrowd = [int(o["iscrowd"]) for o in gt]
        ious = self.ious[imgId, catId]
        T, G, D = len(p.iouThrs), len(gt), len(dt)
        gtm, dtm, dtIg = np.zeros((T, G)), np.zeros((T, D)), np.zeros((T, D))  # noqa: N806
        gtIg = np.array([g["_ignore"] for g in gt])  # noqa: N806
        if len(ious) and G and D:
            ious = np.asarray(ious)[:D][:, gtind]
            lowest = min(float(np.min(p.iouThrs)), 1 - 1e-10)
            rows, cols = np.nonzero(ious >= lowest)  # row-major: gt in sorted order per detection
            values = ious[rows, cols].tolist()
            bounds = np.searchsorted(rows, np.arange(D + 1)).tolist()
            cols = cols.tolist()
            ignored = gtIg.tolist()
            for tind, t in enumerate(p.iouThrs):
                thr = min([t, 1 - 1e-10])
                taken = [False] * G
                for dind in range(D):
                    iou, m = thr, -1
                    for k in range(bounds[dind], bounds[dind + 1]):
                        gind = cols[k]
                        if taken[gind] and not iscrowd[gind]:
                            continue
                        if m > -1 and ignored[m] == 0 and ignored[gind] == 1:
                            break
                        if values[k] < iou:
                            continue
                        iou, m = values[k], gind
                    if m == -1:
                        continue
                    taken[m] = True
                    dtIg[tind, dind] = gtIg[m]
                    dtm[tind, dind] = gt[m]["id"]
                    gtm[tind, m] = dt[dind]["id"]
        a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, len(dt)))
        dtIg = np.logical_or(dtIg, np.logical_and(dtm == 0, np.repeat(a, T, 0)))  # noqa: N806
        return {"image_id": imgId, "category_id": catId, "aRng": aRng, "maxDet": maxDet,
                "dtIds": [d["id"] for d in dt], "gtIds": [g["id"] for g in gt],
                "dtMatches": dtm, "gtMatches": gtm, "dtScores": [d["score"] for d in dt],
                "gtIgnore": gtIg, "dtIgnore": dtIg}


def run_cocoeval(gt: COCO, dt: COCO, cat_ids: list[int], evaluator: type[COCOeval] = SparseEval,
                 configure: Callable[[COCOeval], None] | None = None,
                 max_dets: int = COCO_MAX_DETS) -> COCOeval:
    """evaluate() + accumulate() of a (sub)class of COCOeval on mask ("segm") IoU, keeping at
    most ``max_dets`` detections per image and category (the highest-scored)."""
    ev = evaluator(gt, dt, "segm")
    ev.params.catIds = list(cat_ids)
    ev.params.imgIds = sorted(gt.getImgIds())
    ev.params.maxDets = [int(max_dets)]
    if configure is not None:
        configure(ev)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean_valid(values: np.ndarray) -> float | None:
    v = values[values > -1]
    return float(np.mean(v)) if v.size else None


def summarize(ev: COCOeval, k: int | None = None, area: str = "all") -> dict[str, float | None]:
    """COCO summary numbers for category index ``k`` (None: all categories, as COCO prints).

    Same slicing and averaging as ``COCOeval.summarize``; ``-1`` (undefined) becomes None.
    """
    p, e = ev.params, ev.eval
    kk = slice(None) if k is None else slice(k, k + 1)
    m = len(p.maxDets) - 1  # the largest limit (run_cocoeval sets only one)

    def ap(thr=None, a=area):
        s = e["precision"][:, :, kk, p.areaRngLbl.index(a), m]
        if thr is not None:
            s = s[np.where(np.abs(p.iouThrs - thr) < 1e-9)[0]]
        return _mean_valid(s)

    # AP70 is the CC-framework paper's "0.7AP^m" (Tables 1-3).
    out = {"AP": ap(), "AP50": ap(0.5), "AP70": ap(0.7), "AP75": ap(0.75)}
    if {"small", "medium", "large"} <= set(p.areaRngLbl):
        out.update(APs=ap(a="small"), APm=ap(a="medium"), APl=ap(a="large"))
    out["AR"] = _mean_valid(e["recall"][:, kk, p.areaRngLbl.index(area), m])
    return out


def pr_curve(ev: COCOeval, k: int, iou: float) -> list[float | None]:
    """Interpolated precision at COCO's 101 recall points (area all, the run's maxDets)."""
    p = ev.params
    t = int(np.argmin(np.abs(p.iouThrs - iou)))
    s = ev.eval["precision"][t, :, k, p.areaRngLbl.index("all"), -1]
    return [float(v) if v > -1 else None for v in s]


def ordered_dts(ev: COCOeval, img_id: int, cat_id: int) -> list[dict]:
    """Detections of one image/category in the order COCOeval.computeIoU uses."""
    dt = ev._dts[img_id, cat_id] if ev.params.useCats else [
        d for c in ev.params.catIds for d in ev._dts[img_id, c]]
    inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
    return [dt[i] for i in inds][: ev.params.maxDets[-1]]


def ordered_gts(ev: COCOeval, img_id: int, cat_id: int) -> list[dict]:
    return ev._gts[img_id, cat_id] if ev.params.useCats else [
        g for c in ev.params.catIds for g in ev._gts[img_id, c]]


class CachedIoUEval(SparseEval):
    """COCOeval that takes mask IoUs from an earlier run over the same gt/dt instead of recomputing."""

    cache: dict = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 - pycocotools API
        return self.cache[imgId, catId]


class BoundaryEval(SparseEval):
    """COCOeval matching on min(mask IoU, boundary IoU) (reference Boundary IoU API behaviour).

    Each gt/dt annotation must carry its boundary band RLE under ``"boundary"``; mask IoUs
    come from ``mask_ious`` (an earlier stock run's ``ious``), so only boundary IoUs are new.
    """

    mask_ious: dict = {}

    def computeIoU(self, imgId, catId):  # noqa: N802
        from overlapseg.evaluate.boundary import boundary_iou_matrix

        gt, dt = ordered_gts(self, imgId, catId), ordered_dts(self, imgId, catId)
        if len(gt) == 0 and len(dt) == 0:
            return []
        miou = self.mask_ious[imgId, catId]
        if len(gt) == 0 or len(dt) == 0:
            return miou
        biou = boundary_iou_matrix([d["boundary"] for d in dt], [g["boundary"] for g in gt])
        return np.minimum(np.asarray(miou), biou)


def binned_eval(images: list[dict], categories: list[dict], gt_anns: list[dict], dt_anns: list[dict],
                gt_bin: dict[int, int], dt_bin: dict[int, int], n_bins: int, cat_ids: list[int],
                mask_ious: dict, max_dets: int = COCO_MAX_DETS) -> COCOeval:
    """COCOeval whose area ranges are instance groups: range b keeps gt with bin b, ignores the rest.

    Detections matched to an ignored gt are ignored (COCO rule); unmatched detections count
    as false positives only in their own group ``dt_bin``.
    """
    gts = [{**a, "area": float(gt_bin[a["id"]])} for a in gt_anns]
    dts = [{**a, "area": float(dt_bin[a["id"]])} for a in dt_anns]
    ev_cls = type("BinnedEval", (CachedIoUEval,), {"cache": mask_ious})

    def configure(ev):
        ev.params.areaRng = [[float(b), float(b)] for b in range(n_bins)]
        ev.params.areaRngLbl = [f"bin{b}" for b in range(n_bins)]

    return run_cocoeval(make_coco(images, categories, gts), make_coco(images, categories, dts),
                        cat_ids, ev_cls, configure, max_dets)


def copy_anns(anns: list[dict]) -> list[dict]:
    return [copy.copy(a) for a in anns]

"""COCO mask AP through pycocotools, plus Boundary AP and attribute-binned AP on the same matcher.

Mask AP is pycocotools' ``COCOeval`` unchanged. Boundary AP (Cheng et al. 2021) swaps only the
IoU that ``COCOeval`` matches with: ``min(mask IoU, boundary IoU)``, which is how the reference
Boundary IoU API subclasses ``COCOeval``. AP for instance groups (overlap bins) reuses
``COCOeval``'s area-range mechanism: each instance's ``area`` is replaced by its group index
and each area range selects one group, so ignore/match rules stay pycocotools' own.
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


def make_coco(images: list[dict], categories: list[dict], anns: list[dict]) -> COCO:
    """In-memory COCO object (no stdout chatter); works for empty annotation lists too."""
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(gt: COCO, dt: COCO, cat_ids: list[int], evaluator: type[COCOeval] = COCOeval,
                 configure: Callable[[COCOeval], None] | None = None) -> COCOeval:
    """evaluate() + accumulate() of a (sub)class of COCOeval on mask ("segm") IoU."""
    ev = evaluator(gt, dt, "segm")
    ev.params.catIds = list(cat_ids)
    ev.params.imgIds = sorted(gt.getImgIds())
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
    m = p.maxDets.index(100) if 100 in p.maxDets else len(p.maxDets) - 1

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
    """Interpolated precision at COCO's 101 recall points (area all, maxDets 100)."""
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


class CachedIoUEval(COCOeval):
    """COCOeval that takes mask IoUs from an earlier run over the same gt/dt instead of recomputing."""

    cache: dict = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 - pycocotools API
        return self.cache[imgId, catId]


class BoundaryEval(COCOeval):
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
                mask_ious: dict) -> COCOeval:
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
        ev.params.maxDets = [100]

    return run_cocoeval(make_coco(images, categories, gts), make_coco(images, categories, dts),
                        cat_ids, ev_cls, configure)


def copy_anns(anns: list[dict]) -> list[dict]:
    return [copy.copy(a) for a in anns]

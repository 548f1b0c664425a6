"""One evaluator for every metric the five papers report (issue 3).

``evaluate`` takes COCO ground truth (amodal, possibly overlapping instances) and COCO results
(RLE + score) and returns one JSON-ready dict::

    {<category>: {AP, AP50, AP75, APs, APm, APl, AR, boundary_AP, AP_TP_boundary@0.5,
                  AP_TP_boundary@0.7, AJI, Dice, F1, FNo, TPp, FPp, ISBI_Dice,
                  pixel_seg_F1, instance_seg_F1, by_overlap, error_analysis, n_gt, n_pred, ...},
     "mean": {same keys, averaged over categories},
     "pixel": {class: {accuracy, precision, recall, F1, IoU}}   # only with semantic_dir
     "curves": {<category>: {recall, precision@0.5, precision@0.75}},
     "params": {...}, "n_images": int}

Undefined values are ``None`` (JSON null), never 0. Ranked metrics (AP family) use all
predictions with their scores; "hard" metrics (AJI, Dice, F1, ISBI, pixel/instance seg F1)
use predictions with score >= ``score_threshold``. See docs/evaluation.md for definitions.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.canonical import DataError
from overlapseg.data.semantic import semantic_targets
from overlapseg.evaluate import coco_ap
from overlapseg.evaluate.boundary import boundary_rle
from overlapseg.evaluate.error_analysis import error_variants
from overlapseg.evaluate.inputs import load_inputs
from overlapseg.evaluate.matching import DetectionCounts, aji_counts, pair_table
from overlapseg.evaluate.overlap import DEFAULT_BINS, bin_index, bin_label, check_bins, overlap_ratios
from overlapseg.evaluate.pixel import SemanticAccumulator, load_semantic, seg_f1, seg_f1_counts
from overlapseg.utils.io import write_json

log = logging.getLogger(__name__)

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "boundary_AP",
               "AP_TP_boundary@0.5", "AP_TP_boundary@0.7", "AJI", "Dice", "F1", "FNo", "TPp", "FPp")
TP_BOUNDARY_THRESHOLDS = (0.5, 0.7)


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _tp_boundary_quality(ev, boundaries: dict, cat_index: int, iou_thrs: np.ndarray) -> dict:
    """AP_TP^boundary (CC-framework paper, Sec. 3.3): boundary quality of true positives only.

    True positives are COCOeval's own matches at mask IoU >= t (t = 0.5, 0.7; area "all",
    100 detections). Their Boundary IoU is scored like AP over boundary thresholds: the
    fraction of those true positives with Boundary IoU >= tau, averaged over
    tau = 0.50:0.05:0.95. False positives and misses do not enter (None if no TP).
    """
    p = ev.params
    a_all = p.areaRng[p.areaRngLbl.index("all")]
    n_img = len(p.imgIds)
    n_area = len(p.areaRng)
    out = {}
    for t in TP_BOUNDARY_THRESHOLDS:
        ti = int(np.argmin(np.abs(p.iouThrs - t)))
        values = []
        for a in range(n_area):
            if p.areaRng[a] != a_all:
                continue
            for e in ev.evalImgs[cat_index * n_area * n_img + a * n_img:
                                 cat_index * n_area * n_img + (a + 1) * n_img]:
                if e is None:
                    continue
                for d_id, g_id, ign in zip(e["dtIds"], e["dtMatches"][ti], e["dtIgnore"][ti]):
                    if g_id > 0 and not ign:
                        b = mask_utils.iou([boundaries["dt", d_id]], [boundaries["gt", int(g_id)]], [0])
                        values.append(float(b[0][0]))
            break
        v = np.asarray(values)
        out[f"AP_TP_boundary@{t:g}"] = (float(np.mean([(v >= tau).mean() for tau in iou_thrs]))
                                        if v.size else None)
    return out


def evaluate(gt_json: Any, pred_json: Any, categories: Sequence[str] = ("cytoplasm", "nucleus"),
             iou_type: str = "segm", semantic_dir: str | os.PathLike | None = None,
             overlap_bins: Sequence[Sequence[float]] = DEFAULT_BINS, border_width: int = 2,
             boundary_dilation: float = 0.02, score_threshold: float = 0.5,
             isbi_threshold: float = 0.7, isbi_criterion: str = "iou",
             error_min_dice: float = 0.5) -> dict:
    """Compute the full metric suite. ``gt_json``: path or COCO dict; ``pred_json``: path or list.

    ``iou_type`` picks the IoU behind the AP-family keys and the overlap-binned AP: "segm"
    (mask IoU) or "boundary" (min(mask IoU, Boundary IoU)); ``boundary_AP`` is always
    reported. ``semantic_dir`` holds ``{image name}.npz`` semantic predictions.
    """
    if iou_type not in ("segm", "boundary"):
        raise ValueError(f"iou_type must be 'segm' or 'boundary', got {iou_type!r}")
    if isbi_criterion not in ("dice", "iou"):
        raise ValueError(f"isbi_criterion must be 'dice' or 'iou', got {isbi_criterion!r}")
    if not categories:
        raise ValueError("at least one category is needed")
    bins = check_bins(overlap_bins)
    labels = [bin_label(lo, hi, k == len(bins) - 1) for k, (lo, hi) in enumerate(bins)]
    inp = load_inputs(gt_json, pred_json)
    cat_ids = [inp.cat_id(c) for c in categories]
    images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in inp.images]
    cats = [c for c in inp.categories if c["id"] in cat_ids]
    gt_anns = [a for a in inp.gt_anns if a["category_id"] in cat_ids]
    dt_anns = [a for a in inp.dt_anns if a["category_id"] in cat_ids]

    # 1. COCO mask AP, pycocotools unchanged.
    gt_coco = coco_ap.make_coco(images, cats, gt_anns)
    dt_coco = coco_ap.make_coco(images, cats, dt_anns)
    mask_ev = coco_ap.run_cocoeval(gt_coco, dt_coco, cat_ids)

    # 2. Boundary AP: same matcher on min(mask IoU, boundary IoU).
    boundaries = {}
    for kind, anns in (("gt", gt_anns), ("dt", dt_anns)):
        for a in anns:
            boundaries[kind, a["id"]] = boundary_rle(a["segmentation"], boundary_dilation)
    b_cls = type("BoundaryEvalRun", (coco_ap.BoundaryEval,), {"mask_ious": mask_ev.ious})
    b_ev = coco_ap.run_cocoeval(
        coco_ap.make_coco(images, cats, [{**a, "boundary": boundaries["gt", a["id"]]} for a in gt_anns]),
        coco_ap.make_coco(images, cats, [{**a, "boundary": boundaries["dt", a["id"]]} for a in dt_anns]),
        cat_ids, b_cls)
    main_ev = mask_ev if iou_type == "segm" else b_ev

    # 3-6. Per image: hard metrics, overlap ratios and bins, error-analysis variants.
    cyto_id = next((c["id"] for c in inp.categories if c["name"] == "cytoplasm"), None)
    nuc_id = next((c["id"] for c in inp.categories if c["name"] == "nucleus"), None)
    det = {c: DetectionCounts() for c in cat_ids}
    aji_img = {c: [] for c in cat_ids}
    aji_bin = {c: [[] for _ in bins] for c in cat_ids}
    segf1 = {c: np.zeros(4, dtype=np.int64) for c in cat_ids}
    gt_bin, dt_bin = {}, {}
    with_gt_all, matched_all = [], []
    for img in inp.images:
        iid, h, w = img["id"], img["height"], img["width"]
        ratios = overlap_ratios(inp.gts(iid, cyto_id) if cyto_id else [],
                                inp.gts(iid, nuc_id) if nuc_id else [])
        for c in cat_ids:
            gts, dts = inp.gts(iid, c), inp.dts(iid, c)
            g_rles = [a["segmentation"] for a in gts]
            table_all = pair_table(g_rles, [a["segmentation"] for a in dts])
            gb = np.array([bin_index(ratios.get(a["id"], 0.0), bins) for a in gts], dtype=int)
            iou_all = table_all.iou
            for a, b in zip(gts, gb):
                gt_bin[a["id"]] = int(b)
            for j, a in enumerate(dts):  # a prediction belongs to the bin of the gt it overlaps most
                has = len(gts) and iou_all[:, j].max() > 0
                dt_bin[a["id"]] = int(gb[int(np.argmax(iou_all[:, j]))]) if has else 0
            keep = np.array([a["score"] >= score_threshold for a in dts], dtype=bool)
            kept = [a for a, k in zip(dts, keep) if k]
            table = table_all.subset(dt_idx=np.flatnonzero(keep))
            pairs = det[c].add(table, h * w, 0.5, isbi_threshold, isbi_criterion)
            segf1[c] += seg_f1_counts(g_rles, [a["segmentation"] for a in kept], pairs, h, w)
            cc, uu = aji_counts(table)
            if uu > 0:
                aji_img[c].append(cc / uu)
            db = np.array([dt_bin[a["id"]] for a in kept], dtype=int)
            for b in range(len(bins)):
                cc, uu = aji_counts(table, gb == b, db == b)
                if uu > 0:
                    aji_bin[c][b].append(cc / uu)
            w_gt, matched = error_variants(gts, dts, table_all, error_min_dice)
            with_gt_all += w_gt
            matched_all += matched

    bin_ev = coco_ap.binned_eval(images, cats, gt_anns, dt_anns, gt_bin, dt_bin, len(bins),
                                 cat_ids, main_ev.ious)
    wg_ev = coco_ap.run_cocoeval(gt_coco, coco_ap.make_coco(images, cats, with_gt_all), cat_ids)
    gm_ev = coco_ap.run_cocoeval(gt_coco, coco_ap.make_coco(images, cats, matched_all), cat_ids)

    # Assemble.
    result: dict[str, Any] = {}
    curves = {}
    ea_keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    for k, (name, c) in enumerate(zip(categories, cat_ids)):
        r = coco_ap.summarize(main_ev, k)
        bsum = coco_ap.summarize(b_ev, k)
        r.update(boundary_AP=bsum["AP"], boundary_AP50=bsum["AP50"], boundary_AP75=bsum["AP75"])
        r.update(_tp_boundary_quality(mask_ev, boundaries, k, mask_ev.params.iouThrs))
        r["AJI"] = _mean(aji_img[c])
        r.update(det[c].metrics())
        r.update(seg_f1(segf1[c]))
        r["by_overlap"] = {
            lab: {"AP": coco_ap.summarize(bin_ev, k, area=f"bin{b}")["AP"],
                  "AJI": _mean(aji_bin[c][b]),
                  "n": sum(1 for a in gt_anns if a["category_id"] == c and gt_bin[a["id"]] == b)}
            for b, lab in enumerate(labels)}
        r["error_analysis"] = {
            "w_gt_mask": {key: coco_ap.summarize(wg_ev, k)[key] for key in ea_keys},
            "gt_matched": {key: coco_ap.summarize(gm_ev, k)[key] for key in ea_keys}}
        r["n_gt"] = sum(1 for a in gt_anns if a["category_id"] == c)
        r["n_pred"] = sum(1 for a in dt_anns if a["category_id"] == c)
        r["n_pred_above_threshold"] = sum(1 for a in dt_anns
                                          if a["category_id"] == c and a["score"] >= score_threshold)
        result[name] = r
        curves[name] = {"recall": [float(v) for v in mask_ev.params.recThrs],
                        "precision@0.5": coco_ap.pr_curve(mask_ev, k, 0.5),
                        "precision@0.75": coco_ap.pr_curve(mask_ev, k, 0.75)}

    per_cat = [result[n] for n in categories]
    mean: dict[str, Any] = {}
    for key in per_cat[0]:
        if key in ("by_overlap", "error_analysis"):
            continue
        mean[key] = _mean(r[key] for r in per_cat)
    # AP-family means exactly as COCO's own all-category summary.
    mean.update(coco_ap.summarize(main_ev))
    bsum = coco_ap.summarize(b_ev)
    mean.update(boundary_AP=bsum["AP"], boundary_AP50=bsum["AP50"], boundary_AP75=bsum["AP75"])
    for key in ("n_gt", "n_pred", "n_pred_above_threshold"):
        mean[key] = sum(r[key] for r in per_cat)
    mean["by_overlap"] = {
        lab: {"AP": coco_ap.summarize(bin_ev, None, area=f"bin{b}")["AP"],
              "AJI": _mean(r["by_overlap"][lab]["AJI"] for r in per_cat),
              "n": sum(r["by_overlap"][lab]["n"] for r in per_cat)}
        for b, lab in enumerate(labels)}
    mean["error_analysis"] = {
        "w_gt_mask": {key: coco_ap.summarize(wg_ev)[key] for key in ea_keys},
        "gt_matched": {key: coco_ap.summarize(gm_ev)[key] for key in ea_keys}}
    result["mean"] = mean

    if semantic_dir is not None:
        result["pixel"] = _pixel_metrics(inp, Path(semantic_dir), border_width, cyto_id, nuc_id)
    result["curves"] = curves
    result["n_images"] = len(inp.images)
    result["params"] = {
        "categories": list(categories), "iou_type": iou_type, "overlap_bins": [list(b) for b in bins],
        "border_width": border_width, "boundary_dilation": boundary_dilation,
        "score_threshold": score_threshold, "isbi_threshold": isbi_threshold,
        "isbi_criterion": isbi_criterion, "error_min_dice": error_min_dice,
        "dropped_empty_predictions": inp.dropped_empty}
    return result


def _pixel_metrics(inp, semantic_dir: Path, border_width: int, cyto_id, nuc_id) -> dict:
    """Semantic-map metrics over all gt images (thesis tables); GT from semantic_targets."""
    if not semantic_dir.is_dir():
        raise DataError(semantic_dir, "semantic prediction directory not found")
    acc = SemanticAccumulator()
    for img in inp.images:
        h, w = img["height"], img["width"]
        stacks = []
        for cid in (cyto_id, nuc_id):
            rles = [a["segmentation"] for a in inp.gts(img["id"], cid)] if cid is not None else []
            stacks.append(np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool) if rles
                          else np.zeros((0, h, w), dtype=bool))
        gt_maps = semantic_targets(stacks[0], stacks[1], border_width)
        path = semantic_dir / f"{img['name']}.npz"
        acc.add(gt_maps, load_semantic(path, (h, w)), str(path))
    return acc.metrics()


def write_metrics(path: str | os.PathLike, metrics: dict, provenance: dict | None = None) -> None:
    """Write metrics JSON atomically and deterministically, provenance under ``provenance``."""
    out = dict(metrics)
    if provenance is not None:
        out["provenance"] = provenance
    write_json(path, out)

"""Metric families: one function each, ``family(ctx: EvalContext) -> dict``, listed in ``METRIC_FAMILIES``.

A family returns ``{<category name>: {key: value}, "mean": {key: value}}`` for per-category
metrics and/or top-level entries (``"pixel"``, ``"curves"``, ...). ``evaluate`` runs the
families in list order and merges their outputs (per-category and mean dicts are joined; a
key produced by two families is an error). To add a metric: write one function here (shared
expensive work goes in ``EvalContext`` as a cached property) and append it to the list.

"mean" is the mean over categories of the defined (non-None) values, except where a family
says otherwise (AP family: COCO's all-category summary; counts: sums).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.canonical import DataError
from overlapseg.data.semantic import semantic_targets
from overlapseg.evaluate import coco_ap
from overlapseg.evaluate.context import EvalContext
from overlapseg.evaluate.error_analysis import error_variants
from overlapseg.evaluate.matching import DetectionCounts, aji_counts
from overlapseg.evaluate.overlap import bin_index, overlap_ratios
from overlapseg.evaluate.pixel import SemanticAccumulator, load_semantic, seg_f1, seg_f1_counts

MetricFamily = Callable[[EvalContext], dict]

TP_BOUNDARY_THRESHOLDS = (0.5, 0.7)
DETECTION_KEYS = ("Dice", "F1", "precision", "recall")  # from DetectionCounts.metrics()
ISBI_KEYS = ("ISBI_Dice", "FNo", "TPp", "FPp")  # ditto
ERROR_ANALYSIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _with_category_means(ctx: EvalContext, per_cat: dict[str, dict]) -> dict[str, dict]:
    """Add ``"mean"``: per key, the mean over categories of the defined values."""
    keys = per_cat[ctx.categories[0]]
    per_cat["mean"] = {key: _mean(per_cat[name][key] for name in ctx.categories) for key in keys}
    return per_cat


# ----------------------------------------------------------------------------- ranked (AP) families
def coco_ap_metrics(ctx: EvalContext) -> dict:
    """AP, AP50, AP70, AP75, APs, APm, APl, AR: pycocotools unchanged, on the ``iou_type`` IoU.

    "mean" is COCO's own all-category summary.
    """
    ev = ctx.main_eval
    out = {name: coco_ap.summarize(ev, k) for k, name in enumerate(ctx.categories)}
    out["mean"] = coco_ap.summarize(ev)
    return out


def boundary_ap_metrics(ctx: EvalContext) -> dict:
    """boundary_AP, boundary_AP50, boundary_AP75: COCO matcher on min(mask IoU, Boundary IoU)."""
    ev = ctx.boundary_eval

    def pick(s):
        return {"boundary_AP": s["AP"], "boundary_AP50": s["AP50"], "boundary_AP75": s["AP75"]}

    out = {name: pick(coco_ap.summarize(ev, k)) for k, name in enumerate(ctx.categories)}
    out["mean"] = pick(coco_ap.summarize(ev))
    return out


def tp_boundary_metrics(ctx: EvalContext) -> dict:
    """AP_TP_boundary@0.5, @0.7 (CC-framework paper, Sec. 3.3): boundary quality of true positives.

    True positives are COCOeval's own matches at mask IoU >= t (t = 0.5, 0.7; area "all",
    ``max_dets`` detections). Their Boundary IoU is scored like AP over boundary thresholds: the
    fraction of those true positives with Boundary IoU >= tau, averaged over
    tau = 0.50:0.05:0.95. False positives and misses do not enter (None if no TP).
    """
    ev, boundaries = ctx.mask_eval, ctx.boundaries
    p = ev.params
    a_all = p.areaRng[p.areaRngLbl.index("all")]
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    out = {}
    for k, name in enumerate(ctx.categories):
        r = {}
        for t in TP_BOUNDARY_THRESHOLDS:
            ti = int(np.argmin(np.abs(p.iouThrs - t)))
            values = []
            for a in range(n_area):
                if p.areaRng[a] != a_all:
                    continue
                for e in ev.evalImgs[k * n_area * n_img + a * n_img:k * n_area * n_img + (a + 1) * n_img]:
                    if e is None:
                        continue
                    for d_id, g_id, ign in zip(e["dtIds"], e["dtMatches"][ti], e["dtIgnore"][ti]):
                        if g_id > 0 and not ign:
                            b = mask_utils.iou([boundaries["dt", d_id]], [boundaries["gt", int(g_id)]], [0])
                            values.append(float(b[0][0]))
                break
            v = np.asarray(values)
            r[f"AP_TP_boundary@{t:g}"] = (float(np.mean([(v >= tau).mean() for tau in p.iouThrs]))
                                          if v.size else None)
        out[name] = r
    return _with_category_means(ctx, out)


# ----------------------------------------------------------------------------- hard (thresholded) families
def aji_metrics(ctx: EvalContext) -> dict:
    """AJI: Aggregated Jaccard Index per image (predictions with score >= threshold), averaged."""
    per_image = {c: [] for c in ctx.cat_ids}
    for r in ctx.image_categories:
        cc, uu = aji_counts(r.table)
        if uu > 0:
            per_image[r.cat_id].append(cc / uu)
    out = {name: {"AJI": _mean(per_image[c])} for name, c in zip(ctx.categories, ctx.cat_ids)}
    return _with_category_means(ctx, out)


def detection_metrics(ctx: EvalContext) -> dict:
    """Dice (of pairs matched at IoU >= 0.5), F1, precision, recall: micro-averaged over images."""
    counts, _ = ctx.detection
    out = {}
    for name, c in zip(ctx.categories, ctx.cat_ids):
        m = counts[c].metrics()
        out[name] = {key: m[key] for key in DETECTION_KEYS}
    return _with_category_means(ctx, out)


def isbi_metrics(ctx: EvalContext) -> dict:
    """ISBI 2014 measures: ISBI_Dice, FNo, TPp, FPp (good cell: Dice/IoU > ``isbi_threshold``)."""
    counts, _ = ctx.detection
    out = {}
    for name, c in zip(ctx.categories, ctx.cat_ids):
        m = counts[c].metrics()
        out[name] = {key: m[key] for key in ISBI_KEYS}
    return _with_category_means(ctx, out)


def seg_f1_metrics(ctx: EvalContext) -> dict:
    """pixel_seg_F1, instance_seg_F1 (pixel F1 over all / over IoU >= 0.5 matched instances)."""
    _, pairs = ctx.detection
    counts = {c: np.zeros(4, dtype=np.int64) for c in ctx.cat_ids}
    for r, pr in zip(ctx.image_categories, pairs):
        counts[r.cat_id] += seg_f1_counts([a["segmentation"] for a in r.gts],
                                          [a["segmentation"] for a in r.kept], pr,
                                          r.image["height"], r.image["width"])
    out = {name: seg_f1(counts[c]) for name, c in zip(ctx.categories, ctx.cat_ids)}
    return _with_category_means(ctx, out)


# ----------------------------------------------------------------------------- breakdowns
def overlap_metrics(ctx: EvalContext) -> dict:
    """by_overlap: {bin label: {AP, AJI, best_IoU, recall50, n}} by each gt's overlap ratio.

    A prediction belongs to the bin of the gt it overlaps most (bin 0 if none). AP: COCOeval
    with bins as area ranges on the ``iou_type`` IoU; AJI per image within the bin; best_IoU:
    mean over the bin's gts of their best IoU with any kept prediction (score >= threshold),
    recall50 the fraction of them with best IoU >= 0.5; n: gt count. "mean": AP over all
    categories, the other measures mean over categories, n summed.
    """
    bins, labels = ctx.options.overlap_bins, ctx.options.bin_labels
    gt_bin, dt_bin = {}, {}
    aji_bin = {c: [[] for _ in bins] for c in ctx.cat_ids}
    best_bin = {c: [[] for _ in bins] for c in ctx.cat_ids}
    ratios: dict[int, dict[int, float]] = {}
    for r in ctx.image_categories:
        iid = r.image["id"]
        if iid not in ratios:
            ratios[iid] = overlap_ratios(ctx.inputs.gts(iid, ctx.cyto_id) if ctx.cyto_id else [],
                                         ctx.inputs.gts(iid, ctx.nuc_id) if ctx.nuc_id else [])
        gb = np.array([bin_index(ratios[iid].get(a["id"], 0.0), bins) for a in r.gts], dtype=int)
        for a, b in zip(r.gts, gb):
            gt_bin[a["id"]] = int(b)
        iou_all = r.table_all.iou
        for j, a in enumerate(r.dts):
            has = len(r.gts) and iou_all[:, j].max() > 0
            dt_bin[a["id"]] = int(gb[int(np.argmax(iou_all[:, j]))]) if has else 0
        db = np.array([dt_bin[a["id"]] for a in r.kept], dtype=int)
        best = r.table.iou.max(axis=1) if len(r.kept) else np.zeros(len(r.gts))
        for b, v in zip(gb, best):
            best_bin[r.cat_id][int(b)].append(float(v))
        for b in range(len(bins)):
            cc, uu = aji_counts(r.table, gb == b, db == b)
            if uu > 0:
                aji_bin[r.cat_id][b].append(cc / uu)
    bin_ev = coco_ap.binned_eval(ctx.images, ctx.cats, ctx.gt_anns, ctx.dt_anns, gt_bin, dt_bin, len(bins),
                                 ctx.cat_ids, ctx.main_eval.ious, ctx.max_dets)
    out: dict[str, Any] = {}
    for k, (name, c) in enumerate(zip(ctx.categories, ctx.cat_ids)):
        out[name] = {"by_overlap": {
            lab: {"AP": coco_ap.summarize(bin_ev, k, area=f"bin{b}")["AP"],
                  "AJI": _mean(aji_bin[c][b]),
                  "best_IoU": _mean(best_bin[c][b]),
                  "recall50": _mean([float(v >= 0.5) for v in best_bin[c][b]]),
                  "n": sum(1 for a in ctx.gt_anns if a["category_id"] == c and gt_bin[a["id"]] == b)}
            for b, lab in enumerate(labels)}}
    per_cat = [out[name]["by_overlap"] for name in ctx.categories]
    out["mean"] = {"by_overlap": {
        lab: {"AP": coco_ap.summarize(bin_ev, None, area=f"bin{b}")["AP"],
              "AJI": _mean(r[lab]["AJI"] for r in per_cat),
              "best_IoU": _mean(r[lab]["best_IoU"] for r in per_cat),
              "recall50": _mean(r[lab]["recall50"] for r in per_cat),
              "n": sum(r[lab]["n"] for r in per_cat)}
        for b, lab in enumerate(labels)}}
    return out


def error_analysis_metrics(ctx: EvalContext) -> dict:
    """error_analysis: AP family with gt masks for matched predictions ("w_gt_mask") and with
    only the predictions matched at Dice >= ``error_min_dice`` ("gt_matched")."""
    with_gt, matched = [], []
    for r in ctx.image_categories:
        w, m = error_variants(r.gts, r.dts, r.table_all, ctx.options.error_min_dice)
        with_gt += w
        matched += m
    evs = {variant: coco_ap.run_cocoeval(ctx.gt_coco, coco_ap.make_coco(ctx.images, ctx.cats, dts), ctx.cat_ids,
                                         max_dets=ctx.max_dets)
           for variant, dts in (("w_gt_mask", with_gt), ("gt_matched", matched))}

    def summary(k):
        return {variant: {key: coco_ap.summarize(ev, k)[key] for key in ERROR_ANALYSIS_KEYS}
                for variant, ev in evs.items()}

    out = {name: {"error_analysis": summary(k)} for k, name in enumerate(ctx.categories)}
    out["mean"] = {"error_analysis": summary(None)}
    return out


def count_metrics(ctx: EvalContext) -> dict:
    """n_gt, n_pred, n_pred_above_threshold per category; "mean" holds the totals."""
    out = {}
    for name, c in zip(ctx.categories, ctx.cat_ids):
        thr = ctx.threshold(c)
        out[name] = {"n_gt": sum(1 for a in ctx.gt_anns if a["category_id"] == c),
                     "n_pred": sum(1 for a in ctx.dt_anns if a["category_id"] == c),
                     "n_pred_above_threshold": sum(1 for a in ctx.dt_anns
                                                   if a["category_id"] == c and a["score"] >= thr)}
    out["mean"] = {key: sum(out[name][key] for name in ctx.categories) for key in out[ctx.categories[0]]}
    return out


# ----------------------------------------------------------------------------- top-level entries
def _instance_maps(ctx: EvalContext, img: dict, kind: str) -> dict[str, np.ndarray]:
    """Semantic maps of one image from its gt instances (``kind`` "gt") or from its
    predictions above their category's score threshold ("dt"), by ``semantic_targets``."""
    h, w = img["height"], img["width"]
    stacks = []
    for cid in (ctx.cyto_id, ctx.nuc_id):
        if cid is None:
            anns = []
        elif kind == "gt":
            anns = ctx.inputs.gts(img["id"], cid)
        else:
            thr = ctx.threshold(cid) if cid in ctx.cat_ids else 0.5
            anns = [a for a in ctx.inputs.dts(img["id"], cid) if a["score"] >= thr]
        rles = [a["segmentation"] for a in anns]
        stacks.append(np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool) if rles
                      else np.zeros((0, h, w), dtype=bool))
    return semantic_targets(stacks[0], stacks[1], ctx.options.border_width)


def pixel_metrics(ctx: EvalContext) -> dict:
    """pixel: {class: accuracy, precision, recall, F1, IoU} of semantic maps: ``{image
    name}.npz`` per gt image in ``semantic_dir``, or with ``semantic_from_predictions`` the maps
    of the predictions above the score threshold (how instance models make theirs, so they
    follow a validation-chosen threshold); gt maps from ``semantic_targets``."""
    from_predictions = ctx.options.semantic_from_predictions
    if ctx.options.semantic_dir is None and not from_predictions:
        return {}
    semantic_dir = None if from_predictions else Path(ctx.options.semantic_dir)
    if semantic_dir is not None and not semantic_dir.is_dir():
        raise DataError(semantic_dir, "semantic prediction directory not found")
    acc = SemanticAccumulator()
    for img in ctx.inputs.images:
        gt_maps = _instance_maps(ctx, img, "gt")
        if semantic_dir is None:
            acc.add(gt_maps, {k: v.astype(bool) for k, v in _instance_maps(ctx, img, "dt").items()},
                    ctx.inputs.pred_source)
        else:
            path = semantic_dir / f"{img['name']}.npz"
            acc.add(gt_maps, load_semantic(path, (img["height"], img["width"])), str(path))
    return {"pixel": acc.metrics()}


FIXED_THRESHOLD_KEYS = ("AJI", "Dice", "F1", "precision", "recall")


def fixed_threshold_metrics(ctx: EvalContext) -> dict:
    """at_fixed_threshold: AJI, Dice, F1, precision, recall with one fixed score threshold for
    every category (only with ``fixed_threshold``: the secondary column beside metrics at
    validation-chosen thresholds); reuses the pair tables of all predictions."""
    thr = ctx.options.fixed_threshold
    if thr is None:
        return {}
    counts = {c: DetectionCounts() for c in ctx.cat_ids}
    aji_values = {c: [] for c in ctx.cat_ids}
    for r in ctx.image_categories:
        table = r.table_all.subset(dt_idx=np.flatnonzero([a["score"] >= thr for a in r.dts]))
        counts[r.cat_id].add(table, r.image["height"] * r.image["width"])
        c, u = aji_counts(table)
        if u > 0:
            aji_values[r.cat_id].append(c / u)
    out = {}
    for name, c in zip(ctx.categories, ctx.cat_ids):
        m = counts[c].metrics()
        out[name] = {"AJI": _mean(aji_values[c]), **{k: m[k] for k in FIXED_THRESHOLD_KEYS[1:]}}
    out = _with_category_means(ctx, out)
    return {"at_fixed_threshold": {**out, "score_threshold": thr}}


def pr_curve_metrics(ctx: EvalContext) -> dict:
    """curves: {category: recall, precision@0.5, precision@0.75} of the mask-IoU COCOeval."""
    ev = ctx.mask_eval
    return {"curves": {name: {"recall": [float(v) for v in ev.params.recThrs],
                              "precision@0.5": coco_ap.pr_curve(ev, k, 0.5),
                              "precision@0.75": coco_ap.pr_curve(ev, k, 0.75)}
                       for k, name in enumerate(ctx.categories)}}


def run_info(ctx: EvalContext) -> dict:
    """n_images and params (the options used, how many empty predictions were dropped, and the
    per-image detection limit of the AP family with the most gt/predictions of one image)."""
    o = ctx.options
    most_gt, most_dt = ctx.most_per_image
    return {"n_images": len(ctx.inputs.images), "params": {
        "categories": list(o.categories), "iou_type": o.iou_type,
        "overlap_bins": [list(b) for b in o.overlap_bins],
        "border_width": o.border_width, "boundary_dilation": o.boundary_dilation,
        "score_threshold": (dict(o.score_threshold) if isinstance(o.score_threshold, dict)
                            else o.score_threshold), "isbi_threshold": o.isbi_threshold,
        "semantic_from_predictions": o.semantic_from_predictions,
        "threshold_source": o.threshold_source,
        **({"threshold_selection": o.threshold_selection} if o.threshold_selection else {}),
        "isbi_criterion": o.isbi_criterion, "error_min_dice": o.error_min_dice,
        "dropped_empty_predictions": ctx.inputs.dropped_empty,
        "max_detections": ctx.max_dets, "max_detections_setting": o.max_detections,
        "most_gt_per_image": most_gt, "most_predictions_per_image": most_dt}}


METRIC_FAMILIES: list[MetricFamily] = [
    coco_ap_metrics,
    boundary_ap_metrics,
    tp_boundary_metrics,
    aji_metrics,
    detection_metrics,
    isbi_metrics,
    seg_f1_metrics,
    overlap_metrics,
    error_analysis_metrics,
    count_metrics,
    pixel_metrics,
    fixed_threshold_metrics,
    pr_curve_metrics,
    run_info,
]

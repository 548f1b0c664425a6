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
use predictions with score >= ``score_threshold``: a number, one per category, or
``"validation"``: per category the threshold that maximises F1 (or AJI) on the validation
split's predictions (:mod:`overlapseg.evaluate.thresholds`), recorded under ``params``
(``score_threshold``, ``threshold_source``, ``threshold_selection``), with the hard metrics
at the fixed threshold as a secondary block ``at_fixed_threshold``. See docs/evaluation.md
for definitions.

Composition: each metric family is one function ``family(ctx) -> dict`` in
``evaluate/families.py``; ``METRIC_FAMILIES`` lists them in output order and ``evaluate``
merges their outputs. Inputs, options and work shared by several families (COCOeval runs,
boundary bands, per-image pair tables, IoU >= 0.5 matching) live in ``EvalContext``
(``evaluate/context.py``), computed once on first use.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from overlapseg.evaluate.context import EvalContext
from overlapseg.evaluate.families import METRIC_FAMILIES, TP_BOUNDARY_THRESHOLDS, MetricFamily
from overlapseg.evaluate.thresholds import select_score_thresholds
from overlapseg.evaluate.overlap import DEFAULT_BINS
from overlapseg.utils.io import write_json

__all__ = ["METRIC_FAMILIES", "METRIC_KEYS", "TP_BOUNDARY_THRESHOLDS", "EvalContext", "evaluate",
           "merge_family_outputs", "write_metrics"]

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "boundary_AP",
               "AP_TP_boundary@0.5", "AP_TP_boundary@0.7", "AJI", "Dice", "F1", "FNo", "TPp", "FPp")


def evaluate(gt_json: Any, pred_json: Any, categories: Sequence[str] = ("cytoplasm", "nucleus"),
             iou_type: str = "segm", semantic_dir: str | os.PathLike | None = None,
             overlap_bins: Sequence[Sequence[float]] = DEFAULT_BINS, border_width: int = 2,
             boundary_dilation: float = 0.02, score_threshold: float | dict | str = 0.5,
             isbi_threshold: float = 0.7, isbi_criterion: str = "iou",
             error_min_dice: float = 0.5, max_detections: int | None = None,
             families: Sequence[MetricFamily] | None = None, val_gt_json: Any = None,
             val_pred_json: Any = None, threshold_criterion: str = "F1",
             fixed_threshold: float | None = None, semantic_from_predictions: bool = False) -> dict:
    """Compute the full metric suite. ``gt_json``: path or COCO dict; ``pred_json``: path or list.

    ``iou_type`` picks the IoU behind the AP-family keys and the overlap-binned AP: "segm"
    (mask IoU) or "boundary" (min(mask IoU, Boundary IoU)); ``boundary_AP`` is always
    reported. ``semantic_dir`` holds ``{image name}.npz`` semantic predictions.
    ``max_detections``: detections per image and category the AP family counts (None: at
    least the most predictions of one image, so none is dropped; a smaller number warns).
    ``families`` (default ``METRIC_FAMILIES``, see evaluate/families.py) are run in order on
    one shared ``EvalContext`` and their outputs merged.

    ``score_threshold="validation"`` picks per category the threshold maximising
    ``threshold_criterion`` ("F1" or "AJI") on ``val_gt_json``/``val_pred_json`` (the
    validation split); without them (no validation split) ``fixed_threshold`` (default 0.5)
    is used and ``params.threshold_source`` says so. ``fixed_threshold`` also adds the
    secondary block ``at_fixed_threshold`` (always with "validation"). ``semantic_from_predictions``: pixel metrics on maps
    made from the predictions above the threshold (instance models), not ``semantic_dir``.
    """
    selection, source = None, "fixed"
    if isinstance(score_threshold, str):
        if score_threshold != "validation":
            raise ValueError(f'score_threshold must be a number, {{category: number}} or "validation", '
                             f'got {score_threshold!r}')
        if (val_gt_json is None) != (val_pred_json is None):
            raise ValueError("validation thresholds need both the validation ground truth and predictions")
        fixed_threshold = 0.5 if fixed_threshold is None else float(fixed_threshold)
        if val_gt_json is not None:
            selection = select_score_thresholds(val_gt_json, val_pred_json, categories,
                                                threshold_criterion, fixed_threshold)
            if selection["n_images"] == 0:  # an empty validation split (val fraction 0)
                selection = None
        if selection is None:
            score_threshold, source = fixed_threshold, "fixed (no validation split)"
        else:
            score_threshold, source = selection.pop("score_threshold"), "validation"
    ctx = EvalContext.build(gt_json, pred_json, categories=categories, iou_type=iou_type,
                            semantic_dir=semantic_dir, overlap_bins=overlap_bins,
                            border_width=border_width, boundary_dilation=boundary_dilation,
                            score_threshold=score_threshold, isbi_threshold=isbi_threshold,
                            isbi_criterion=isbi_criterion, error_min_dice=error_min_dice,
                            max_detections=max_detections,
                            semantic_from_predictions=semantic_from_predictions,
                            fixed_threshold=fixed_threshold, threshold_source=source,
                            threshold_selection=selection)
    fams = METRIC_FAMILIES if families is None else families
    return merge_family_outputs(ctx.categories, ((f.__name__, f(ctx)) for f in fams))


def merge_family_outputs(categories: Sequence[str], outputs: Iterable[tuple[str, dict]]) -> dict:
    """Join (family name, output) pairs: per-category and "mean" dicts are merged key by key,
    other entries are placed at the top level; a key given by two families raises ValueError."""
    result: dict[str, Any] = {name: {} for name in categories}
    result["mean"] = {}
    nested = set(result)
    owner: dict[tuple, str] = {}
    for family, out in outputs:
        for key, value in out.items():
            if key in nested:
                for k, v in value.items():
                    if (key, k) in owner:
                        raise ValueError(f"metric families {owner[key, k]} and {family} both set {key}/{k}")
                    owner[key, k] = family
                    result[key][k] = v
            else:
                if (key,) in owner:
                    raise ValueError(f"metric families {owner[(key,)]} and {family} both set {key!r}")
                owner[(key,)] = family
                result[key] = value
    return result


def write_metrics(path: str | os.PathLike, metrics: dict, provenance: dict | None = None) -> None:
    """Write metrics JSON atomically and deterministically, provenance under ``provenance``."""
    out = dict(metrics)
    if provenance is not None:
        out["provenance"] = provenance
    write_json(path, out)

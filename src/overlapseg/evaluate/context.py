"""The one object every metric family reads: loaded inputs, options and shared computations.

``EvalContext.build`` validates the options and loads gt/predictions once. Work that several
families need (the stock COCOeval run, boundary bands, the per-image gt/prediction pair
tables, the IoU >= 0.5 matching) is a ``cached_property``: computed on first use, then shared,
and never computed when no family in the list asks for it.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

from overlapseg.evaluate import coco_ap
from overlapseg.evaluate.boundary import boundary_rle
from overlapseg.evaluate.inputs import EvalInputs, load_inputs
from overlapseg.evaluate.matching import DetectionCounts, PairTable, pair_table
from overlapseg.evaluate.overlap import DEFAULT_BINS, bin_label, check_bins

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """Thresholds and switches of one evaluation (validated; echoed under ``params``)."""

    categories: tuple[str, ...] = ("cytoplasm", "nucleus")
    iou_type: str = "segm"
    semantic_dir: str | os.PathLike | None = None
    overlap_bins: tuple[tuple[float, float], ...] = DEFAULT_BINS
    border_width: int = 2
    boundary_dilation: float = 0.02
    score_threshold: float | dict = 0.5  # one for all categories, or {category name: threshold}
    isbi_threshold: float = 0.7
    isbi_criterion: str = "iou"
    error_min_dice: float = 0.5
    max_detections: int | None = None  # COCOeval's per-image limit; None: follow the data
    semantic_from_predictions: bool = False  # pixel maps from the kept predictions, not files
    fixed_threshold: float | None = None  # secondary hard metrics at this threshold (None: none)
    threshold_source: str = "fixed"  # where score_threshold comes from ("validation", ...)
    threshold_selection: dict | None = None  # criterion and validation values behind it

    def threshold(self, category: str) -> float:
        """The score threshold of ``category``."""
        t = self.score_threshold
        return float(t[category]) if isinstance(t, dict) else float(t)

    @property
    def bin_labels(self) -> list[str]:
        n = len(self.overlap_bins)
        return [bin_label(lo, hi, k == n - 1) for k, (lo, hi) in enumerate(self.overlap_bins)]


@dataclass
class ImageCategory:
    """gt and predictions of one (image, category) with their pixel-count pair table."""

    image: dict
    cat_id: int
    gts: list[dict]
    dts: list[dict]
    table_all: PairTable  # all predictions (ranked metrics, error analysis)
    keep: np.ndarray  # predictions with score >= score_threshold
    kept: list[dict]
    table: PairTable  # kept predictions only ("hard" metrics)


class EvalContext:
    """Inputs restricted to the evaluated categories, options, and lazily shared results."""

    def __init__(self, inputs: EvalInputs, options: EvalOptions):
        self.inputs = inputs
        self.options = options
        self.categories = options.categories
        self.cat_ids = [inputs.cat_id(c) for c in self.categories]
        self.images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in inputs.images]
        self.cats = [c for c in inputs.categories if c["id"] in self.cat_ids]
        self.gt_anns = [a for a in inputs.gt_anns if a["category_id"] in self.cat_ids]
        self.dt_anns = [a for a in inputs.dt_anns if a["category_id"] in self.cat_ids]
        self.cyto_id = next((c["id"] for c in inputs.categories if c["name"] == "cytoplasm"), None)
        self.nuc_id = next((c["id"] for c in inputs.categories if c["name"] == "nucleus"), None)

    @classmethod
    def build(cls, gt_json: Any, pred_json: Any, categories: Sequence[str] = ("cytoplasm", "nucleus"),
              iou_type: str = "segm", semantic_dir: str | os.PathLike | None = None,
              overlap_bins: Sequence[Sequence[float]] = DEFAULT_BINS, border_width: int = 2,
              boundary_dilation: float = 0.02, score_threshold: float = 0.5,
              isbi_threshold: float = 0.7, isbi_criterion: str = "iou",
              error_min_dice: float = 0.5, max_detections: int | None = None,
              semantic_from_predictions: bool = False, fixed_threshold: float | None = None,
              threshold_source: str = "fixed", threshold_selection: dict | None = None) -> "EvalContext":
        """Validate options (before reading any file), then load ``gt_json``/``pred_json``."""
        if max_detections is not None and (isinstance(max_detections, bool) or not isinstance(
                max_detections, int) or max_detections < 1):
            raise ValueError(f"max_detections must be a positive integer or None, got {max_detections!r}")
        if iou_type not in ("segm", "boundary"):
            raise ValueError(f"iou_type must be 'segm' or 'boundary', got {iou_type!r}")
        if isbi_criterion not in ("dice", "iou"):
            raise ValueError(f"isbi_criterion must be 'dice' or 'iou', got {isbi_criterion!r}")
        if not categories:
            raise ValueError("at least one category is needed")
        if isinstance(score_threshold, dict):
            missing = [c for c in categories if c not in score_threshold]
            if missing:
                raise ValueError(f"score_threshold has no value for categories {missing}")
            score_threshold = {c: float(score_threshold[c]) for c in categories}
        elif isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float)):
            raise ValueError(f"score_threshold must be a number or {{category: number}}, got {score_threshold!r}")
        options = EvalOptions(
            categories=tuple(categories), iou_type=iou_type, semantic_dir=semantic_dir,
            overlap_bins=tuple(check_bins(overlap_bins)), border_width=border_width,
            boundary_dilation=boundary_dilation, score_threshold=score_threshold,
            isbi_threshold=isbi_threshold, isbi_criterion=isbi_criterion, error_min_dice=error_min_dice,
            max_detections=max_detections, semantic_from_predictions=semantic_from_predictions,
            fixed_threshold=None if fixed_threshold is None else float(fixed_threshold),
            threshold_source=threshold_source, threshold_selection=threshold_selection)
        return cls(load_inputs(gt_json, pred_json), options)

    def threshold(self, cat_id: int) -> float:
        """The score threshold of the category with id ``cat_id``."""
        return self.options.threshold(self.categories[self.cat_ids.index(cat_id)])

    # ------------------------------------------------------------------ COCOeval runs
    @cached_property
    def most_per_image(self) -> tuple[int, int]:
        """(most gt instances, most predictions) of one image and category."""
        def most(anns):
            counts = Counter((a["image_id"], a["category_id"]) for a in anns)
            return max(counts.values(), default=0)
        return most(self.gt_anns), most(self.dt_anns)

    @cached_property
    def max_dets(self) -> int:
        """COCOeval's limit of detections per image and category: the ``max_detections``
        setting, or else at least COCO's 100 and the most instances or predictions of one
        image, so no prediction is dropped. A setting below the data is warned about."""
        most_gt, most_dt = self.most_per_image
        setting = self.options.max_detections
        if setting is None:
            return max(coco_ap.COCO_MAX_DETS, most_gt, most_dt)
        if most_dt > setting:
            counts = Counter((a["image_id"], a["category_id"]) for a in self.dt_anns)
            over = sorted({i for (i, _), n in counts.items() if n > setting})
            log.warning("%s: %d image(s) have more than max_detections=%d predictions of one category "
                        "(up to %d); AP counts only the %d highest-scored per image and category",
                        self.inputs.pred_source, len(over), setting, most_dt, setting)
        return setting

    @cached_property
    def gt_coco(self):
        return coco_ap.make_coco(self.images, self.cats, self.gt_anns)

    @cached_property
    def mask_eval(self) -> COCOeval:
        """pycocotools run on mask IoU (COCO AP, ``max_dets`` detections per image)."""
        return coco_ap.run_cocoeval(self.gt_coco, coco_ap.make_coco(self.images, self.cats, self.dt_anns),
                                    self.cat_ids, max_dets=self.max_dets)

    @cached_property
    def boundaries(self) -> dict[tuple[str, int], dict]:
        """Boundary band RLE of every gt ("gt", id) and prediction ("dt", id)."""
        out = {}
        for kind, anns in (("gt", self.gt_anns), ("dt", self.dt_anns)):
            for a in anns:
                out[kind, a["id"]] = boundary_rle(a["segmentation"], self.options.boundary_dilation)
        return out

    @cached_property
    def boundary_eval(self) -> COCOeval:
        """Same matcher on min(mask IoU, Boundary IoU); mask IoUs reused from ``mask_eval``."""
        b = self.boundaries
        b_cls = type("BoundaryEvalRun", (coco_ap.BoundaryEval,), {"mask_ious": self.mask_eval.ious})
        return coco_ap.run_cocoeval(
            coco_ap.make_coco(self.images, self.cats, [{**a, "boundary": b["gt", a["id"]]} for a in self.gt_anns]),
            coco_ap.make_coco(self.images, self.cats, [{**a, "boundary": b["dt", a["id"]]} for a in self.dt_anns]),
            self.cat_ids, b_cls, max_dets=self.max_dets)

    @property
    def main_eval(self) -> COCOeval:
        """The run behind the AP-family keys (``iou_type``)."""
        return self.mask_eval if self.options.iou_type == "segm" else self.boundary_eval

    # ------------------------------------------------------------------ per image
    @cached_property
    def image_categories(self) -> list[ImageCategory]:
        """One record per (image, category), image-major in gt order, categories as requested."""
        out = []
        for img in self.inputs.images:
            for c in self.cat_ids:
                thr = self.threshold(c)
                gts, dts = self.inputs.gts(img["id"], c), self.inputs.dts(img["id"], c)
                table_all = pair_table([a["segmentation"] for a in gts], [a["segmentation"] for a in dts])
                keep = np.array([a["score"] >= thr for a in dts], dtype=bool)
                out.append(ImageCategory(img, c, gts, dts, table_all, keep,
                                         [a for a, k in zip(dts, keep) if k],
                                         table_all.subset(dt_idx=np.flatnonzero(keep))))
        return out

    @cached_property
    def detection(self) -> tuple[dict[int, DetectionCounts], list[tuple[np.ndarray, np.ndarray]]]:
        """Instance matching of the kept predictions: per-category running counts (Dice, F1,
        ISBI) and, per ``image_categories`` record, the IoU >= 0.5 matched (gt, dt) pairs."""
        o = self.options
        counts = {c: DetectionCounts() for c in self.cat_ids}
        pairs = [counts[r.cat_id].add(r.table, r.image["height"] * r.image["width"], 0.5,
                                      o.isbi_threshold, o.isbi_criterion)
                 for r in self.image_categories]
        return counts, pairs

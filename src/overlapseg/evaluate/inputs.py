"""Reading and checking the evaluator's inputs: COCO ground truth and COCO results.

Everything is kept as RLE (bytes counts) so that IoUs, areas and unions are computed by
pycocotools' run-length operations instead of on decoded pixel arrays.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.canonical import DataError, segmentation_to_rle
from overlapseg.utils.io import read_json

log = logging.getLogger(__name__)


@dataclass
class EvalInputs:
    """Validated ground truth and predictions, COCO-style, with RLE masks.

    ``gt_anns`` / ``dt_anns`` are COCO annotation dicts whose ``segmentation`` is an RLE with
    bytes counts and whose ``area``/``bbox``/``iscrowd`` are filled in (as ``COCO.loadRes``
    does for results). Predictions keep their input order (ids 1..n).
    """

    images: list[dict]
    categories: list[dict]
    gt_anns: list[dict]
    dt_anns: list[dict]
    gt_source: str = "<gt>"
    pred_source: str = "<pred>"
    dropped_empty: int = 0
    by_image_cat: dict = field(default_factory=dict)

    def cat_id(self, name: str) -> int:
        for c in self.categories:
            if c["name"] == name:
                return int(c["id"])
        raise DataError(self.gt_source, f"category {name!r} not in ground truth categories "
                        f"({', '.join(c['name'] for c in self.categories)})")

    def gts(self, image_id: int, cat_id: int) -> list[dict]:
        return self.by_image_cat.get(("gt", image_id, cat_id), [])

    def dts(self, image_id: int, cat_id: int) -> list[dict]:
        return self.by_image_cat.get(("dt", image_id, cat_id), [])


def _load(obj: Any, default_name: str) -> tuple[Any, str]:
    if isinstance(obj, (str, os.PathLike)):
        return read_json(obj), str(obj)
    return obj, default_name


def _to_rle(seg: Any, h: int, w: int, where: str, source: str) -> dict:
    """Checked RLE (bytes counts) of one segmentation: a bad RLE would make pycocotools read
    uninitialised memory or loop forever in ``rleMerge``, so it must never reach it."""
    try:
        return segmentation_to_rle(seg, h, w)
    except ValueError as exc:
        raise DataError(source, f"{where}: {exc}") from None


def load_inputs(gt_json: Any, pred_json: Any) -> EvalInputs:
    """Load and validate COCO ground truth (path or dict) and COCO results (path or list)."""
    gt, gt_src = _load(gt_json, "<gt>")
    preds, pred_src = _load(pred_json, "<pred>")
    if not isinstance(gt, dict):
        raise DataError(gt_src, "ground truth must be a COCO JSON object")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise DataError(gt_src, f"missing COCO key {key!r}")
    if not isinstance(preds, list):
        raise DataError(pred_src, "predictions must be a JSON list of COCO results")

    images = []
    sizes: dict[int, tuple[int, int]] = {}
    for k, img in enumerate(gt["images"]):
        try:
            iid, h, w = int(img["id"]), int(img["height"]), int(img["width"])
        except (KeyError, TypeError, ValueError):
            raise DataError(gt_src, f"image entry {k} needs integer 'id', 'height', 'width'") from None
        if iid in sizes:
            raise DataError(gt_src, f"duplicate image id {iid}")
        sizes[iid] = (h, w)
        name = img.get("name") or Path(img.get("file_name", str(iid))).stem
        images.append({**img, "id": iid, "height": h, "width": w, "name": name})
    categories = [{"id": int(c["id"]), "name": c["name"], "supercategory": c.get("supercategory", "")}
                  for c in gt["categories"]]
    cat_ids = {c["id"] for c in categories}

    gt_anns = []
    for k, ann in enumerate(gt["annotations"]):
        where = f"annotation {k} (id {ann.get('id')})"
        iid = ann.get("image_id")
        if iid not in sizes:
            raise DataError(gt_src, f"{where}: image_id {iid!r} not in images")
        if ann.get("category_id") not in cat_ids:
            raise DataError(gt_src, f"{where}: unknown category_id {ann.get('category_id')!r}")
        rle = _to_rle(ann.get("segmentation"), *sizes[iid], where, gt_src)
        gt_anns.append({"id": int(ann.get("id", k + 1)), "image_id": iid,
                        "category_id": int(ann["category_id"]), "segmentation": rle,
                        "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)),
                        "iscrowd": int(ann.get("iscrowd", 0)), "parent_id": ann.get("parent_id")})
    if len({a["id"] for a in gt_anns}) != len(gt_anns):
        raise DataError(gt_src, "duplicate annotation ids")

    dt_anns, dropped = [], 0
    for k, p in enumerate(preds):
        where = f"prediction {k}" + (f" (id {p['id']})" if isinstance(p, dict) and "id" in p else "")
        if not isinstance(p, dict):
            raise DataError(pred_src, f"{where}: not a JSON object")
        for key in ("image_id", "category_id", "segmentation", "score"):
            if key not in p:
                raise DataError(pred_src, f"{where}: missing key {key!r}")
        if p["image_id"] not in sizes:
            raise DataError(pred_src, f"{where}: image_id {p['image_id']!r} is not in the ground truth")
        if p["category_id"] not in cat_ids:
            raise DataError(pred_src, f"{where}: unknown category_id {p['category_id']!r}")
        score = p["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
            raise DataError(pred_src, f"{where}: score must be a finite number, got {score!r}")
        if not 0.0 <= score <= 1.0:
            # scores are confidences: the score threshold and AP ranking assume [0, 1]
            raise DataError(pred_src, f"{where}: score {score!r} outside [0, 1] (logits? apply a "
                                      "sigmoid/softmax before writing predictions)")
        rle = _to_rle(p["segmentation"], *sizes[p["image_id"]], where, pred_src)
        area = float(mask_utils.area(rle))
        if area == 0:
            dropped += 1
            continue
        dt_anns.append({"id": len(dt_anns) + 1, "image_id": p["image_id"],
                        "category_id": int(p["category_id"]), "segmentation": rle,
                        "area": area, "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0,
                        "score": float(score)})
    if dropped:
        log.warning("%s: dropped %d prediction(s) with empty masks", pred_src, dropped)

    index: dict = {}
    for a in gt_anns:
        index.setdefault(("gt", a["image_id"], a["category_id"]), []).append(a)
    for a in dt_anns:
        index.setdefault(("dt", a["image_id"], a["category_id"]), []).append(a)
    return EvalInputs(images, categories, gt_anns, dt_anns, gt_src, pred_src, dropped, index)

"""Boundary regions and Boundary IoU (Cheng et al., CVPR 2021; used by the CC-framework paper, Sec. 3.3).

The boundary region of a mask is the set of its pixels within ``d`` pixels of its contour,
``d = max(1, round(dilation_ratio * image diagonal))``. As in the reference Boundary IoU API,
"within d" is measured by ``d`` erosions with a 3x3 square kernel and everything outside the
image counts as background (so masks touching the image edge have a boundary there too).
Erosion is done on the mask's bounding box padded by one zero pixel, which gives exactly the
full-image result at a fraction of the cost; ``boundary_rle`` also decodes and encodes only
that box, so a whole-slide tile costs per instance what its box costs, not the full frame.
"""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.canonical import crop_to_box, decode_crop, encode_crop

_KERNEL = np.ones((3, 3), dtype=np.uint8)


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Band width ``d`` in pixels for an image of the given size (at least 1)."""
    return max(1, int(round(dilation_ratio * np.sqrt(height ** 2 + width ** 2))))


def _crop_boundary(crop: np.ndarray, dilation: int) -> np.ndarray:
    """Boundary band of a bounding-box crop (outside the crop counts as background)."""
    padded = cv2.copyMakeBorder(crop.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL, iterations=int(dilation))[1:-1, 1:-1]
    return crop & (eroded == 0)


def mask_to_boundary(mask: np.ndarray, dilation: int) -> np.ndarray:
    """Bool (H, W) boundary band: mask pixels removed by ``dilation`` 3x3 erosions."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    crop, (y0, x0) = crop_to_box(mask)
    if crop.size:
        out[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = _crop_boundary(crop, dilation)
    return out


def boundary_rle(rle: dict, dilation_ratio: float = 0.02) -> dict:
    """COCO RLE of a mask -> COCO RLE (bytes counts) of its boundary band (box-local work)."""
    h, w = (int(v) for v in rle["size"])
    crop, offset = decode_crop(rle, h, w)
    band = _crop_boundary(crop, boundary_width(h, w, dilation_ratio)) if crop.size else crop
    out = encode_crop(band, offset, (h, w))
    return {"size": out["size"], "counts": out["counts"].encode("ascii")}


def boundary_iou(gt: np.ndarray, pred: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two bool masks of one image; ``nan`` if both boundaries are empty."""
    h, w = gt.shape
    d = boundary_width(h, w, dilation_ratio)
    g, p = mask_to_boundary(gt, d), mask_to_boundary(pred, d)
    union = np.count_nonzero(g | p)
    return float(np.count_nonzero(g & p) / union) if union else float("nan")


def boundary_iou_matrix(dt_boundaries: list[dict], gt_boundaries: list[dict]) -> np.ndarray:
    """(n_dt, n_gt) Boundary IoU from boundary RLEs (pycocotools' RLE IoU, no crowd)."""
    if not dt_boundaries or not gt_boundaries:
        return np.zeros((len(dt_boundaries), len(gt_boundaries)))
    return np.asarray(mask_utils.iou(dt_boundaries, gt_boundaries, [0] * len(gt_boundaries)),
                      dtype=float)

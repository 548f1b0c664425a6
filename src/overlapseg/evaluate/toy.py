"""Seeded synthetic ground truth + predictions (overlapping ellipses) for tests and benchmarks."""
from __future__ import annotations

import cv2
import numpy as np

from overlapseg.data.canonical import CATEGORIES, encode_mask, mask_bbox


def _ellipse(shape, center, axes, angle) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(m, (int(center[0]), int(center[1])), (int(axes[0]), int(axes[1])), float(angle),
                0, 360, 1, -1)
    return m.astype(bool)


def toy_case(seed: int = 0, n_images: int = 2, size: int = 128, n_cells: int = 4,
             n_pred: int = 12) -> tuple[dict, list[dict]]:
    """COCO gt (cells clustered so they overlap, one nucleus each) and scored predictions.

    Predictions are jittered copies of gt instances (some good, some poor) plus spurious
    blobs, with random scores; all randomness from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    shape = (size, size)
    for i in range(1, n_images + 1):
        images.append({"id": i, "name": f"img{i:03d}", "file_name": f"img{i:03d}.png",
                       "height": size, "width": size, "source": "toy", "subset": ""})
        hub = rng.uniform(0.35, 0.65, 2) * size
        gts = []
        for _ in range(n_cells):
            c = hub + rng.normal(0, size * 0.12, 2)
            ax = rng.uniform(0.08, 0.18, 2) * size
            cell = _ellipse(shape, c, ax, rng.uniform(0, 180))
            nuc = _ellipse(shape, c + rng.normal(0, 2, 2), ax * 0.3, rng.uniform(0, 180)) & cell
            if not cell.any() or not nuc.any():
                continue
            cid = len(anns) + 1
            for cat, m, parent in ((1, cell, None), (2, nuc, cid)):
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat,
                             "segmentation": encode_mask(m), "area": float(m.sum()),
                             "bbox": mask_bbox(m), "iscrowd": 0, "parent_id": parent})
                gts.append((cat, m))
        for _ in range(n_pred):
            if gts and rng.random() < 0.8:
                cat, m = gts[rng.integers(len(gts))]
                shift = rng.integers(-4, 5, 2)
                pm = np.roll(m, tuple(shift), axis=(0, 1))
                if rng.random() < 0.5:
                    pm = cv2.dilate(pm.astype(np.uint8), np.ones((3, 3), np.uint8),
                                    iterations=int(rng.integers(1, 4))).astype(bool)
            else:
                cat = int(rng.integers(1, 3))
                pm = _ellipse(shape, rng.uniform(0, size, 2), rng.uniform(0.03, 0.15, 2) * size,
                              rng.uniform(0, 180))
            if pm.any():
                preds.append({"image_id": i, "category_id": int(cat), "segmentation": encode_mask(pm),
                              "score": float(np.round(rng.uniform(0.05, 1.0), 4))})
    gt = {"info": {}, "images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, preds

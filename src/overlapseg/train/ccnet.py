"""CC-framework trainer (``model: ccnet``): keypoint detection + contour-attention segmentation.

The network (:mod:`overlapseg.models.ccnet`, paper ``000``) is a torchvision-style detector,
so the Mask R-CNN loop, augmentation and instance outputs apply unchanged; the boundary
branch's freeze/unfreeze schedule follows the loop's ``set_progress`` calls.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from overlapseg.models.ccnet import CC_DEFAULTS, build_ccnet, keypoint_levels
from overlapseg.train.base import DataRef, register
from overlapseg.train.maskrcnn import DETECTION_DEFAULTS, InstanceData, MaskRCNNTrainer, image_tensor, to_target


@register("ccnet")
class CCNetTrainer(MaskRCNNTrainer):
    # box scores are mean Hough votes (low while cytoplasm corners are weak): keep all boxes
    DEFAULTS = {**DETECTION_DEFAULTS, **CC_DEFAULTS, "score_threshold": 0.0}
    # decoding only: a trained model can be re-decoded without retraining
    INFERENCE_KEYS = MaskRCNNTrainer.INFERENCE_KEYS + (
        "heatmap_threshold", "group_tolerance", "max_keypoints", "nms_threshold",
        "min_box_size", "complete_boxes", "box_expand", "mask_refits")
    SMOKE_PARAMS = {"image_size": 48, "width": 8, "kd_channels": 8, "mask_channels": 8,
                    "batch_size": 2, "warmup": 1}

    def build_model(self):
        return build_ccnet(self.params, self.frozen_bn)


def keypoint_level_summary(model_dir, data, names: list[str]) -> dict:
    """:func:`overlapseg.models.ccnet.keypoint_levels` over images ``names`` of a canonical
    dataset: per class and keypoint group the median ``peak`` and ``vote`` over all
    ground-truth keypoints (``n`` of them), and the median over images of ``background``."""
    _, net = CCNetTrainer.load(Path(model_dir))
    values: dict = {}  # (class, group, key) -> values over the split; (class, "background") -> per image
    for image, masks, labels in InstanceData([DataRef(Path(data), names)]).items:
        target = to_target(masks, labels)
        levels = keypoint_levels(net, image_tensor(image), {k: target[k] for k in ("boxes", "labels")})
        for cls, groups in levels.items():
            values.setdefault((cls, "background"), []).append(groups["background"])
            for group in ("corner", "centre"):
                for key in ("peak", "vote"):
                    values.setdefault((cls, group, key), []).extend(groups[group][key])
    summary: dict = {}
    for (cls, *where), vals in values.items():
        median = float(np.median(vals)) if vals else None
        if where == ["background"]:
            summary.setdefault(cls, {})["background"] = median
        else:
            group = summary.setdefault(cls, {}).setdefault(where[0], {"n": len(vals)})
            group[where[1]] = median
    return summary

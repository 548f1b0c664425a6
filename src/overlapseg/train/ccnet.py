"""CC-framework trainer (``model: ccnet``): keypoint detection + contour-attention segmentation.

The network (:mod:`overlapseg.models.ccnet`, paper ``000``) is a torchvision-style detector,
so the Mask R-CNN loop, augmentation and instance outputs apply unchanged; the boundary
branch's freeze/unfreeze schedule follows the loop's ``set_progress`` calls.
"""
from __future__ import annotations

from overlapseg.models.ccnet import CC_DEFAULTS, build_ccnet
from overlapseg.train.base import register
from overlapseg.train.maskrcnn import DETECTION_DEFAULTS, MaskRCNNTrainer


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

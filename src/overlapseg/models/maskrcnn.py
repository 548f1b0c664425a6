"""Mask R-CNN baseline (He et al. 2017) built from torchvision's detection classes.

Differences from torchvision's default constructor, all for training from scratch on small
cytology data: GroupNorm instead of FrozenBatchNorm (frozen identity statistics cannot be
learned without pretrained weights), every backbone stage trainable, smaller anchors (nuclei
are 10-30 px), and the resize range set to the data's native size instead of 800 px.
"""
from __future__ import annotations

import logging
import os
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

log = logging.getLogger(__name__)

NUM_CLASSES = 3  # background, cytoplasm, nucleus


def group_norm(num_channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, num_channels), num_channels)


def build_maskrcnn(depth: int = 18, image_size: int = 512, anchor_sizes=(16, 32, 64, 128, 256),
                   pretrained_backbone: str | os.PathLike | None = None,
                   detections_per_image: int = 100, **kwargs) -> MaskRCNN:
    """ResNet-``depth``-FPN Mask R-CNN with GroupNorm, from scratch unless a local weights file is given.

    ``pretrained_backbone``: path to a torchvision ResNet state dict (e.g. ImageNet weights
    fetched by the user); BatchNorm entries in it do not apply to GroupNorm and are skipped.
    """
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None,
                                   norm_layer=partial(group_norm), trainable_layers=5)
    if pretrained_backbone:
        state = torch.load(pretrained_backbone, map_location="cpu", weights_only=True)
        own = backbone.body.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"{pretrained_backbone}: no tensor matches a resnet{depth} backbone")
        backbone.body.load_state_dict(usable, strict=False)
        log.info("loaded %d/%d backbone tensors from %s", len(usable), len(own), pretrained_backbone)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in anchor_sizes),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return MaskRCNN(backbone, num_classes=NUM_CLASSES, rpn_anchor_generator=anchors,
                    min_size=image_size, max_size=image_size,
                    # grayscale replicated to 3 channels: no ImageNet colour statistics
                    image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
                    box_detections_per_img=detections_per_image, **kwargs)

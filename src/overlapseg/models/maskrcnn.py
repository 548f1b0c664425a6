"""Mask R-CNN baseline (He et al. 2017) built from torchvision's detection classes.

Differences from torchvision's default constructor, all for training from scratch on small
cytology data: GroupNorm instead of FrozenBatchNorm (frozen identity statistics cannot be
learned without pretrained weights), every backbone stage trainable, smaller anchors (nuclei
are 10-30 px), and no resizing at all (:mod:`overlapseg.models.scale`): images keep the
pixel scale the model trained at, whatever their side length.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from overlapseg.models.scale import native_transform

log = logging.getLogger(__name__)

NUM_CLASSES = 3  # background, cytoplasm, nucleus


def group_norm(num_channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, num_channels), num_channels)


def resnet_fpn(depth: int, fpn_channels: int, pretrained_backbone=None) -> BackboneWithFPN:
    """ResNet with trainable GroupNorm everywhere, wrapped in torchvision's FPN."""
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=group_norm)
    if pretrained_backbone:
        state = torch.load(pretrained_backbone, map_location="cpu", weights_only=True)
        own = body.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"{pretrained_backbone}: no tensor matches a resnet{depth} backbone")
        body.load_state_dict(usable, strict=False)
        log.info("loaded %d/%d backbone tensors from %s", len(usable), len(own), pretrained_backbone)
    stage_channels = [body.inplanes // 8 * 2 ** i for i in range(4)]  # 64..512 or 256..2048
    return BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)}, stage_channels,
                           fpn_channels, extra_blocks=LastLevelMaxPool())


def build_maskrcnn(depth: int = 18, image_size: int = 512, anchor_sizes=(16, 32, 64, 128, 256),
                   pretrained_backbone: str | os.PathLike | None = None,
                   detections_per_image: int = 100, fpn_channels: int = 256,
                   mask_head_channels: int = 256, box_head_dim: int = 1024,
                   roi_heads: Callable[[RoIHeads], nn.Module] | None = None, **kwargs) -> MaskRCNN:
    """ResNet-``depth``-FPN Mask R-CNN with GroupNorm, from scratch unless a local weights file is given.

    ``pretrained_backbone``: path to a torchvision ResNet state dict (e.g. ImageNet weights
    fetched by the user); BatchNorm entries in it do not apply to GroupNorm and are skipped.
    ``fpn_channels``/``mask_head_channels``/``box_head_dim`` default to torchvision's sizes;
    smaller values make CPU runs affordable (most of the cost is the 4-conv mask head).
    ``kwargs`` go to ``MaskRCNN`` (e.g. ``box_batch_size_per_image``).
    ``roi_heads``: a factory that receives the standard ``RoIHeads`` and returns the module
    used instead (e.g. ``lambda base: DoNetRoIHeads.from_base(base, ...)``), the way
    torchvision's ``GeneralizedRCNN`` takes its parts; see :func:`roi_heads_arguments`.
    """
    backbone = resnet_fpn(depth, fpn_channels, pretrained_backbone)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in anchor_sizes),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(anchor_sizes))
    model = MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors,
                     min_size=image_size, max_size=image_size,
                     # grayscale replicated to 3 channels: no ImageNet colour statistics
                     image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25],
                     box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
                     box_predictor=FastRCNNPredictor(box_head_dim, NUM_CLASSES),
                     mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1),
                     mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, NUM_CLASSES),
                     box_detections_per_img=detections_per_image, **kwargs)
    model.transform = native_transform(model.transform)  # never resize to a fixed side
    if roi_heads is not None:
        model.roi_heads = roi_heads(model.roi_heads)
    return model


def roi_heads_arguments(base: RoIHeads) -> dict:
    """Constructor arguments that rebuild ``base`` (so a ``RoIHeads`` subclass can reuse its parts).

    ``SubClass(**roi_heads_arguments(base), extra=...)`` gives a subclass instance sharing the
    box/mask heads, pooling, sampling and thresholds the Mask R-CNN constructor configured.
    """
    return {
        "box_roi_pool": base.box_roi_pool, "box_head": base.box_head,
        "box_predictor": base.box_predictor,
        "fg_iou_thresh": base.proposal_matcher.high_threshold,
        "bg_iou_thresh": base.proposal_matcher.low_threshold,
        "batch_size_per_image": base.fg_bg_sampler.batch_size_per_image,
        "positive_fraction": base.fg_bg_sampler.positive_fraction,
        "bbox_reg_weights": base.box_coder.weights, "score_thresh": base.score_thresh,
        "nms_thresh": base.nms_thresh, "detections_per_img": base.detections_per_img,
        "mask_roi_pool": base.mask_roi_pool, "mask_head": base.mask_head,
        "mask_predictor": base.mask_predictor,
    }

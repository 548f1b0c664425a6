"""Mask R-CNN baseline (He et al. 2017) built from torchvision's detection classes.

Differences from torchvision's default constructor: every image keeps the pixel scale the
model trained at, whatever its side length (no resizing, :mod:`overlapseg.models.scale`),
and smaller anchors (nuclei are 10-30 px). The ResNet is set up for its ``init``
(:mod:`overlapseg.models.weights`): from scratch, trainable GroupNorm everywhere (frozen
identity statistics cannot be learned without pretrained weights) and grey normalisation;
for pretrained weights (``frozen_bn=True``), FrozenBatchNorm, a frozen stem + ``layer1`` and
ImageNet normalisation, as torchvision's and Detectron2's pretrained Mask R-CNN. Builders take
no weights file: the trainer loads weights into the built network.

:func:`build_maskrcnn_from_params` is the one reader of a params dict for every detector built
on this network (Mask R-CNN, DoNet, IRNet); :data:`MASKRCNN_DEFAULTS` holds its keys.
"""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from overlapseg.models.scale import native_transform
from overlapseg.models.scope import ScopedPredictor, ScopedRoIHeads, ScopedRPN
from overlapseg.models.weights import FrozenBatchNorm2d, freeze_stem, input_normalisation

NUM_CLASSES = 3  # background, cytoplasm, nucleus

#: the network's params (what :func:`build_maskrcnn_from_params` reads)
MASKRCNN_DEFAULTS = {
    "depth": 18,
    "image_size": 512,  # nominal side (the transform's min/max size; images are never resized)
    "anchor_sizes": [16, 32, 64, 128, 256],
    # head sizes (torchvision defaults; smaller for CPU budgets) and ROI sampling
    "fpn_channels": 256,
    "mask_head_channels": 256,
    "box_head_dim": 1024,
    "box_batch_size_per_image": 512,
    "rpn_post_nms_top_n_train": 2000,
    # detections kept per image (torchvision's 100); every one runs the mask head(s), so a
    # from-scratch model scoring everything alike pays for all of them at inference
    "detections_per_image": 100,
}


def group_norm(num_channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, num_channels), num_channels)


def resnet_fpn(depth: int, fpn_channels: int, frozen_bn: bool = False) -> BackboneWithFPN:
    """torchvision's ResNet in its FPN: trainable GroupNorm, or (``frozen_bn``) FrozenBatchNorm
    with the stem and ``layer1`` frozen, ready for pretrained weights."""
    norm = FrozenBatchNorm2d if frozen_bn else group_norm
    body = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm)
    if frozen_bn:
        freeze_stem(body)
    stage_channels = [body.inplanes // 8 * 2 ** i for i in range(4)]  # 64..512 or 256..2048
    return BackboneWithFPN(body, {f"layer{i + 1}": str(i) for i in range(4)}, stage_channels,
                           fpn_channels, extra_blocks=LastLevelMaxPool())


def build_maskrcnn(depth: int = 18, image_size: int = 512, anchor_sizes=(16, 32, 64, 128, 256),
                   frozen_bn: bool = False, detections_per_image: int = 100,
                   fpn_channels: int = 256, mask_head_channels: int = 256, box_head_dim: int = 1024,
                   roi_heads: Callable[[RoIHeads], nn.Module] | None = None, **kwargs) -> MaskRCNN:
    """ResNet-``depth``-FPN Mask R-CNN, GroupNorm (or FrozenBN + ImageNet normalisation with
    ``frozen_bn``), weights random until the trainer loads some.

    ``fpn_channels``/``mask_head_channels``/``box_head_dim`` default to torchvision's sizes;
    smaller values make CPU runs affordable (most of the cost is the 4-conv mask head).
    ``kwargs`` go to ``MaskRCNN`` (e.g. ``box_batch_size_per_image``).
    Targets may carry ``annotated`` (:mod:`overlapseg.models.scope`): on an image whose source
    does not annotate a class, that class is trained neither as object nor as background.
    ``roi_heads``: a factory that receives the standard ``RoIHeads`` and returns the module
    used instead (e.g. ``lambda base: DoNetRoIHeads.from_base(base, ...)``), the way
    torchvision's ``GeneralizedRCNN`` takes its parts; see :func:`roi_heads_arguments`.
    """
    backbone = resnet_fpn(depth, fpn_channels, frozen_bn)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in anchor_sizes),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(anchor_sizes))
    mean, std = input_normalisation(frozen_bn)
    model = MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors,
                     min_size=image_size, max_size=image_size, image_mean=mean, image_std=std,
                     box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
                     box_predictor=ScopedPredictor(box_head_dim, NUM_CLASSES),
                     mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * 4, 1),
                     mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, NUM_CLASSES),
                     box_detections_per_img=detections_per_image, **kwargs)
    model.transform = native_transform(model.transform)  # never resize to a fixed side
    # same parts, plus the annotation scope of partially annotated images (models.scope)
    model.rpn = ScopedRPN.from_base(model.rpn)
    model.roi_heads = ScopedRoIHeads(**roi_heads_arguments(model.roi_heads))
    if roi_heads is not None:
        model.roi_heads = roi_heads(model.roi_heads)
    return model


def maskrcnn_options(p: dict) -> dict:
    """The Mask R-CNN part of a params dict, missing keys at :data:`MASKRCNN_DEFAULTS` (other
    keys, e.g. a trainer's or a variant's, are ignored)."""
    return {k: p.get(k, v) for k, v in MASKRCNN_DEFAULTS.items()}


def build_maskrcnn_from_params(p: dict, frozen_bn: bool = False,
                               roi_heads: Callable[[RoIHeads], nn.Module] | None = None) -> MaskRCNN:
    """The Mask R-CNN a params dict describes (``roi_heads``: a variant's heads factory)."""
    q = maskrcnn_options(p)
    return build_maskrcnn(q["depth"], q["image_size"], q["anchor_sizes"], frozen_bn,
                          detections_per_image=q["detections_per_image"],
                          fpn_channels=q["fpn_channels"], mask_head_channels=q["mask_head_channels"],
                          box_head_dim=q["box_head_dim"], roi_heads=roi_heads,
                          box_batch_size_per_image=q["box_batch_size_per_image"],
                          rpn_post_nms_top_n_train=q["rpn_post_nms_top_n_train"])


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

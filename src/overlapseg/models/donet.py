"""DoNet (Jiang et al., CVPR 2023, "DoNet: Deep De-overlapping Network for Cytology Instance
Segmentation", Sec. 3, Eq. 1-6) on top of the project's torchvision Mask R-CNN.

The coarse Mask R-CNN (Eq. 1) keeps torchvision's parts. :class:`DoNetRoIHeads` subclasses
``RoIHeads`` and replaces only the mask branch; the box branch is composed from the library's
own sampling, ``fastrcnn_loss`` and ``postprocess_detections``:

* DRM (Sec. 3.2, Eq. 2): an intersection head H_o and a complement head H_m (4 convs +
  up-convolution each, torchvision's ``MaskRCNNHeads``/``MaskRCNNPredictor``) read the RoI
  features concatenated with the instance head's features f^c. The supplement's Concatenation
  Unit is folded into each head's first conv, which reads that concatenation. Targets
  (:func:`decomposition_targets`) are computed on full-image masks, per image and among
  instances of the same class, then cropped to the RoIs like torchvision's mask targets.
* CRM (Sec. 3.2, Eq. 3-4): a Fusion Unit adds to the RoI features a residual computed from
  them and the DRM features f^o, f^m. The result goes through the instance mask head H_i
  again (same weights, predictor included) to give the recombined mask e^r. The residual's
  last conv starts at zero, so an untrained e^r equals the coarse mask. L_cons is
  cross-entropy between e^r and the exclusive-or of the sub-region masks binarised at
  p = 0.5 (:func:`merge_regions`), a target for e^r that is not back-propagated. This is the
  authors' target (DeepDoNet/DoNet, ``detectron2/modeling/roi_heads/roi_heads.py``,
  ``consis_loss_mode == "MX"``: ``(sigmoid > 0.5).logical_xor(sigmoid > 0.5)``), weighted
  there by 0.00125, our ``lambda_cons`` default. Their code also binarises e^r, which leaves
  the term without any gradient; we keep e^r's logits so that Eq. 4 can act on it. With CRM
  on, inference returns e^r, not the coarse mask.
* MRP (Sec. 3.3, Eq. 5): the recombined cytoplasm logits are pasted back at their boxes, and
  their positive parts summed and squashed by a sigmoid into a map M
  (:func:`mrp_attention_map`; background gives 0.5). Summing raw logits would make the ring
  around cells, inside many boxes with negative logits, darker than far background. The
  authors' code also clamps. M multiplies every FPN level (Eq. 5), and a second RPN and RoI
  heads of the same kind find the nuclei on these reweighted features, while the first stage
  trains on cytoplasm only. This is the paper's design and the authors' code:
  Fig. 3 reweights "the feature map for nuclei proposal generation". Reweighting only the
  nucleus RoIs' mask features inside ``RoIHeads`` would be cheaper, but it changes nucleus
  shapes, not which background mimics become nuclei, and that is what MRP is for. The backbone
  is shared; the cost is a second RPN head and RoI heads. Gradients flow through M into the
  cytoplasm heads (the "interaction between stages" of Sec. 3.3).

:class:`DoNet` is a ``GeneralizedRCNN`` built from those parts. Without MRP its ``forward``
is the library's. With every switch off the model is plain Mask R-CNN: same modules,
state-dict keys, losses and outputs as :func:`~overlapseg.models.maskrcnn.build_maskrcnn`.

Loss keys (Eq. 6, already multiplied by their lambda, so the training loss is their sum):
torchvision's five, plus ``loss_intersection`` and ``loss_complement`` (lambda_dec, Eq. 2),
``loss_recombined`` (lambda_rmask, Eq. 3) and ``loss_consistency`` (lambda_cons, Eq. 4). With
MRP, the nucleus stage adds each of its keys again with the suffix ``_nucleus``. Like
torchvision's ``loss_mask``, each mask term averages over all positive RoIs of the batch,
not per image and then over images as Eq. 2-4 write it. The paper gives no lambda values;
lambda_dec and lambda_rmask default to 1 (the authors' code weights those mask losses 1) and
lambda_cons to the authors' 0.00125: at weight 1 a target made of the DRM heads' own guesses
would pull e^r as hard as the ground truth does.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (RoIHeads, fastrcnn_loss, maskrcnn_inference,
                                                    maskrcnn_loss)

from overlapseg.data.canonical import CATEGORY_IDS
from overlapseg.models.scope import SCOPE_KEY, ScopedRoIHeads
from overlapseg.models.maskrcnn import (NUM_CLASSES, build_maskrcnn_from_params, maskrcnn_options,
                                       roi_heads_arguments)

CYTOPLASM, NUCLEUS = CATEGORY_IDS["cytoplasm"], CATEGORY_IDS["nucleus"]

SWITCHES = ("drm_intersection", "drm_complement", "crm_fusion", "crm_consistency", "mrp")

DONET_DEFAULTS = {
    "drm_intersection": True,  # H_o and the intersection term of L_dec
    "drm_complement": True,  # H_m and the complement term of L_dec
    "crm_fusion": True,  # Fusion Unit + recombined mask e^r through H_i, L_rmask; inference uses e^r
    "crm_consistency": True,  # L_cons between e^r and the merged sub-regions
    "mrp": True,  # nucleus stage on FPN features reweighted by the recombined cytoplasm map
    "lambda_dec": 1.0,
    "lambda_rmask": 1.0,
    "lambda_cons": 0.00125,  # authors' code: roi_heads.py, "MX" consistency loss x 0.00125
    "drm_channels": None,  # width of H_o/H_m; None: mask_head_channels (the paper uses H_i's 256)
}

_OFF = dict.fromkeys(SWITCHES, False)
# Switch sets of the paper's ablation rows (Table 3: modules; Table 4: DRM/CRM parts).
ABLATIONS = {
    "maskrcnn": _OFF,  # Table 3 base, Table 4 H_i
    "h_o": {**_OFF, "drm_intersection": True},  # Table 4 +H_o
    "drm": {**_OFF, "drm_intersection": True, "drm_complement": True},  # Table 3 +DRM, Table 4 +H_m
    "drm_fu": {**_OFF, "drm_intersection": True, "drm_complement": True, "crm_fusion": True},  # +FU
    "drm_crm": {**_OFF, "drm_intersection": True, "drm_complement": True, "crm_fusion": True,
                "crm_consistency": True},  # Table 3 +DRM+CRM, Table 4 +L_cons
    "donet": dict.fromkeys(SWITCHES, True),  # Table 3 +DRM+CRM+MRP
}


# ----------------------------------------------------------------------------- pure helpers
def decomposition_targets(masks: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per instance, its intersection with the other instances and its complement (Sec. 3.1).

    ``masks``: (N, H, W) full-image instance masks of one image; ``labels``: (N,) classes,
    where "other instances" are those of the same class (a nucleus does not overlap its own
    cell in this sense); None treats all as one class. Returns ``(intersection, complement)``,
    each (N, H, W) of ``masks``' dtype; they partition each mask.
    """
    present = masks.bool()
    if labels is None:
        labels = torch.zeros(len(masks), dtype=torch.long, device=masks.device)
    shared = torch.zeros_like(present)
    for c in labels.unique():
        same = labels == c
        count = present[same].sum(0, dtype=torch.int32)
        shared[same] = count - present[same].int() > 0
    return (present & shared).to(masks.dtype), (present & ~shared).to(masks.dtype)


def merge_regions(intersection_logits: Tensor, complement_logits: Tensor) -> Tensor:
    """F_merge of Eq. 4: exclusive-or of the sub-region masks binarised at sigmoid > 0.5 (logit
    > 0), as the authors' code does; a hard 0/1 float target of the logits' shape."""
    return ((intersection_logits > 0) ^ (complement_logits > 0)).to(intersection_logits.dtype)


def consistency_loss(recombined_logits: Tensor, intersection_logits: Tensor,
                     complement_logits: Tensor) -> Tensor:
    """L_cons (Eq. 4) on (N, M, M) logits of the instances' classes; the merged target is a
    fixed binary mask (no gradient reaches the DRM heads through it)."""
    if recombined_logits.numel() == 0:
        return recombined_logits.sum() * 0
    target = merge_regions(intersection_logits.detach(), complement_logits.detach())
    return F.binary_cross_entropy_with_logits(recombined_logits, target)


def paste_mask_logits(logits: Tensor, boxes: Tensor, size: tuple[int, int], scale: float = 1.0) -> Tensor:
    """RoI mask logits (N, M, M) put back at ``boxes`` (N, 4; x0, y0, x1, y1) in an (H, W) frame.

    ``scale`` maps box coordinates into the frame (e.g. 1/4 to paste at FPN level P2). Each
    pixel whose centre lies in a box (x0 <= centre < x1) takes the bilinear value of the mask at that position
    (edge cells extend to the box border); pixels outside a box are 0. Returns (N, H, W),
    differentiable in ``logits``.
    """
    h, w = size
    if len(logits) == 0:
        return logits.new_zeros((0, h, w))
    logits = logits.float()
    x0, y0, x1, y1 = (boxes.float() * scale).unbind(1)
    centres_x = torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5
    centres_y = torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5
    # normalised in-box coordinates, -1..1 across each box (grid_sample, align_corners=False)
    u = (centres_x[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1  # (N, W)
    v = (centres_y[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1  # (N, H)
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)
    pasted = F.grid_sample(logits[:, None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[:, 0]
    inside = ((u >= -1) & (u < 1))[:, None, :] & ((v >= -1) & (v < 1))[:, :, None]  # x0 <= centre < x1
    return pasted * inside


def mrp_attention_map(logits: Tensor, boxes: Tensor, size: tuple[int, int], scale: float = 1.0) -> Tensor:
    """The MRP map M of one image (Sec. 3.3): sigmoid of the summed positive pasted logits, (H, W)."""
    return paste_mask_logits(logits, boxes, size, scale).clamp(min=0).sum(0).sigmoid()


def _only(items: dict[str, Tensor], label: int) -> dict[str, Tensor]:
    """The instances of one class in a target or detection dict (every value is per instance
    but a target's annotation scope: the stage sees every other class as absent, as on every
    image, so only ``label``'s own scope remains, :mod:`overlapseg.models.scope`)."""
    keep = items["labels"] == label
    out = {k: v[keep] for k, v in items.items() if k != SCOPE_KEY}
    if SCOPE_KEY in items:
        scope = torch.ones_like(items[SCOPE_KEY])
        scope[label] = items[SCOPE_KEY][label]
        out[SCOPE_KEY] = scope
    return out


def _check_switches(s: dict) -> None:
    regions = s["drm_intersection"] or s["drm_complement"]
    if s["crm_fusion"] and not regions:
        raise ValueError("crm_fusion recombines DRM features: turn on drm_intersection and/or drm_complement")
    if s["crm_consistency"] and not (s["crm_fusion"] and s["drm_intersection"] and s["drm_complement"]):
        raise ValueError("crm_consistency compares e^r with both DRM sub-regions: it needs "
                         "drm_intersection, drm_complement and crm_fusion")


# ----------------------------------------------------------------------------- modules
class RegionMaskHead(nn.Module):
    """H_o or H_m: four 3x3 convs (features f^o / f^m) and a 2x up-convolution to per-class logits."""

    def __init__(self, in_channels: int, width: int, num_classes: int):
        super().__init__()
        self.convs = MaskRCNNHeads(in_channels, [width] * 4, 1)
        self.predictor = MaskRCNNPredictor(width, width, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.convs(x)
        return features, self.predictor(features)


class FusionUnit(nn.Module):
    """CRM's Fusion Unit: RoI features plus a residual from them and the DRM head features."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                                      nn.ReLU(inplace=True),
                                      nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.kaiming_normal_(self.residual[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.residual[0].bias)
        # zero residual at start: e^r begins as the coarse mask and learns what DRM adds
        nn.init.zeros_(self.residual[2].weight)
        nn.init.zeros_(self.residual[2].bias)

    def forward(self, roi_features: Tensor, region_features: list[Tensor]) -> Tensor:
        return roi_features + self.residual(torch.cat([roi_features, *region_features], 1))


class StageOutput(NamedTuple):
    """What one detection stage hands on: detections (eval), losses (train), and the final
    mask logits of its mask RoIs (class channel picked) with their boxes and labels, for MRP."""
    detections: list[dict[str, Tensor]]
    losses: dict[str, Tensor]
    mask_logits: list[Tensor]
    mask_boxes: list[Tensor]
    mask_labels: list[Tensor]


class DoNetRoIHeads(ScopedRoIHeads):
    """torchvision ``RoIHeads`` with DoNet's DRM and CRM in the mask branch (each a switch)."""

    def __init__(self, *, feature_channels: int, mask_channels: int, num_classes: int = NUM_CLASSES,
                 drm_intersection: bool = True, drm_complement: bool = True, crm_fusion: bool = True,
                 crm_consistency: bool = True, lambda_dec: float = 1.0, lambda_rmask: float = 1.0,
                 lambda_cons: float = DONET_DEFAULTS["lambda_cons"], drm_channels: int | None = None, **roi_heads_args):
        super().__init__(**roi_heads_args)
        _check_switches({"drm_intersection": drm_intersection, "drm_complement": drm_complement,
                         "crm_fusion": crm_fusion, "crm_consistency": crm_consistency})
        width = drm_channels or mask_channels
        context = feature_channels + mask_channels  # [f^roi, f^c]
        self.intersection_head = RegionMaskHead(context, width, num_classes) if drm_intersection else None
        self.complement_head = RegionMaskHead(context, width, num_classes) if drm_complement else None
        n_regions = int(drm_intersection) + int(drm_complement)
        self.fusion = (FusionUnit(feature_channels + n_regions * width, feature_channels)
                       if crm_fusion else None)
        self.consistency = crm_consistency
        self.lambda_dec, self.lambda_rmask, self.lambda_cons = lambda_dec, lambda_rmask, lambda_cons

    @classmethod
    def from_base(cls, base: RoIHeads, **donet) -> DoNetRoIHeads:
        """Reuse the box/mask heads, pooling and sampling ``base`` was configured with."""
        return cls(**roi_heads_arguments(base), **donet)

    def forward(self, features, proposals, image_shapes, targets=None):
        stage = self.detect(features, proposals, image_shapes, targets)
        return stage.detections, stage.losses

    def detect(self, features: dict[str, Tensor], proposals: list[Tensor],
               image_shapes: list[tuple[int, int]], targets: list[dict[str, Tensor]] | None = None
               ) -> StageOutput:
        """Box branch as in torchvision, then the DoNet mask branch on the positive RoIs
        (training) or on the detections (inference)."""
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        detections: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_cls, loss_box = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_boxes = [p[i] for p, i in zip(proposals, positive)]
            mask_labels = [lab[i] for lab, i in zip(labels, positive)]
            matched = [m[i] for m, i in zip(matched_idxs, positive)]
        else:
            mask_boxes, scores, mask_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes)
            detections = [{"boxes": b, "labels": lab, "scores": s}
                          for b, s, lab in zip(mask_boxes, scores, mask_labels)]

        logits = self.mask_logits(features, mask_boxes, image_shapes)
        final = logits.get("recombined", logits["mask"])
        if self.training:
            losses.update(self.mask_losses(logits, mask_boxes, mask_labels, matched, targets))
        else:
            for det, probs in zip(detections, maskrcnn_inference(final, mask_labels)):
                det["masks"] = probs
        all_labels = torch.cat(mask_labels)
        chosen = final[torch.arange(len(all_labels), device=final.device), all_labels]
        return StageOutput(detections, losses, list(chosen.split([len(b) for b in mask_boxes])),
                           mask_boxes, mask_labels)

    def mask_logits(self, features: dict[str, Tensor], boxes: list[Tensor],
                    image_shapes: list[tuple[int, int]]) -> dict[str, Tensor]:
        """Per-class logits (R, C, M, M) of the coarse mask and of each DoNet head that is on."""
        roi = self.mask_roi_pool(features, boxes, image_shapes)
        coarse_features = self.mask_head(roi)  # f^c
        out = {"mask": self.mask_predictor(coarse_features)}
        context = torch.cat([roi, coarse_features], 1)
        regions = []
        for name, head in (("intersection", self.intersection_head), ("complement", self.complement_head)):
            if head is not None:
                region_features, out[name] = head(context)
                regions.append(region_features)
        if self.fusion is not None:  # H_i reused on the fused features
            out["recombined"] = self.mask_predictor(self.mask_head(self.fusion(roi, regions)))
        return out

    def mask_losses(self, logits: dict[str, Tensor], boxes: list[Tensor], labels: list[Tensor],
                    matched: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        gt_masks = [t["masks"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        losses = {"loss_mask": maskrcnn_loss(logits["mask"], boxes, gt_masks, gt_labels, matched)}
        if "intersection" in logits or "complement" in logits:
            parts = [decomposition_targets(m, lab) for m, lab in zip(gt_masks, gt_labels)]
            for k, name in enumerate(("intersection", "complement")):
                if name in logits:
                    losses[f"loss_{name}"] = self.lambda_dec * maskrcnn_loss(
                        logits[name], boxes, [p[k] for p in parts], gt_labels, matched)
        if "recombined" in logits:
            losses["loss_recombined"] = self.lambda_rmask * maskrcnn_loss(
                logits["recombined"], boxes, gt_masks, gt_labels, matched)
        if self.consistency:
            lab = torch.cat(labels)
            index = torch.arange(len(lab), device=lab.device)
            losses["loss_consistency"] = self.lambda_cons * consistency_loss(
                *(logits[n][index, lab] for n in ("recombined", "intersection", "complement")))
        return losses


class DoNet(GeneralizedRCNN):
    """Mask R-CNN parts with DoNet RoI heads, plus a nucleus stage when MRP is on.

    ``base``: the (cytoplasm, or all-class without MRP) detector; ``nucleus_stage``: a detector
    whose RPN and RoI heads find nuclei on the MRP-reweighted features of ``base``'s backbone.
    With MRP, inference returns the first stage's cytoplasm and the second stage's nuclei,
    each stage keeping up to ``detections_per_image``.
    """

    def __init__(self, base: MaskRCNN, nucleus_stage: MaskRCNN | None = None):
        super().__init__(base.backbone, base.rpn, base.roi_heads, base.transform)
        self.nucleus_rpn = nucleus_stage.rpn if nucleus_stage is not None else None
        self.nucleus_roi_heads = nucleus_stage.roi_heads if nucleus_stage is not None else None

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.nucleus_rpn is None:
            return super().forward(images, targets)
        if self.training and targets is None:
            raise ValueError("targets should not be None in training mode")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        cell_targets = [_only(t, CYTOPLASM) for t in targets] if targets is not None else None
        nucleus_targets = [_only(t, NUCLEUS) for t in targets] if targets is not None else None

        proposals, losses = self.rpn(batch, features, cell_targets)
        cells = self.roi_heads.detect(features, proposals, batch.image_sizes, cell_targets)
        losses.update(cells.losses)

        weighted = self.reweight(features, cells, batch.tensors.shape[-1])
        proposals, nucleus_losses = self.nucleus_rpn(batch, weighted, nucleus_targets)
        nuclei = self.nucleus_roi_heads.detect(weighted, proposals, batch.image_sizes, nucleus_targets)
        nucleus_losses.update(nuclei.losses)
        losses.update({f"{k}_nucleus": v for k, v in nucleus_losses.items()})

        detections = [{k: torch.cat([c[k], n[k]]) for k in c}
                      for c, n in zip((_only(d, CYTOPLASM) for d in cells.detections),
                                      (_only(d, NUCLEUS) for d in nuclei.detections))]
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        return self.eager_outputs(losses, detections)

    @staticmethod
    def reweight(features: dict[str, Tensor], cells: StageOutput, batch_width: int) -> dict[str, Tensor]:
        """Eq. 5: every FPN level times the MRP map, built at the finest level and area-pooled."""
        finest = next(iter(features.values()))
        size = tuple(finest.shape[-2:])
        scale = finest.shape[-1] / batch_width
        maps = []
        for logits, boxes, labels in zip(cells.mask_logits, cells.mask_boxes, cells.mask_labels):
            keep = labels == CYTOPLASM
            maps.append(mrp_attention_map(logits[keep], boxes[keep], size, scale))
        attention = torch.stack(maps)[:, None]
        return OrderedDict((k, f * F.adaptive_avg_pool2d(attention, f.shape[-2:]).to(f.dtype))
                           for k, f in features.items())


# ----------------------------------------------------------------------------- builder
def donet_options(p: dict) -> dict:
    """The DoNet part of ``p``, DONET_DEFAULTS filled in and checked (other keys are ignored)."""
    unknown = [k for k in p if k.startswith(("drm_", "crm_", "lambda_", "mrp")) and k not in DONET_DEFAULTS]
    if unknown:
        raise KeyError(f"unknown DoNet params {unknown} (known: {sorted(DONET_DEFAULTS)})")
    q = {k: p.get(k, v) for k, v in DONET_DEFAULTS.items()}
    for key in SWITCHES:
        if not isinstance(q[key], bool):
            raise ValueError(f"DoNet switch {key!r} must be true or false, got {q[key]!r}")
    _check_switches(q)
    return q


def build_donet(p: dict, frozen_bn: bool = False) -> DoNet:
    """DoNet from a params dict: Mask R-CNN keys (:func:`build_maskrcnn_from_params`) and
    :data:`DONET_DEFAULTS` keys, missing ones at their defaults; other keys are ignored.

    ``frozen_bn``: FrozenBN backbone and ImageNet normalisation, for pretrained weights.
    With MRP the model is more than Mask R-CNN with other RoI heads, so a trainer builds it
    here rather than through ``build_maskrcnn(roi_heads=...)``.
    """
    q = donet_options(p)
    net = maskrcnn_options(p)
    heads = {"feature_channels": net["fpn_channels"], "mask_channels": net["mask_head_channels"],
             **{k: v for k, v in q.items() if k != "mrp"}}

    def donet_heads(base: RoIHeads) -> DoNetRoIHeads:
        return DoNetRoIHeads.from_base(base, **heads)

    base = build_maskrcnn_from_params(p, frozen_bn, roi_heads=donet_heads)
    if not q["mrp"]:
        return DoNet(base)
    # the nucleus stage: RPN and RoI heads of a second detector, freshly initialised (its
    # backbone is dropped; the nucleus stage reads the first one's reweighted features)
    nucleus_stage = build_maskrcnn_from_params(p, frozen_bn, roi_heads=donet_heads)
    return DoNet(base, nucleus_stage)

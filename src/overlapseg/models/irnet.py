"""IRNet (Zhou et al., MICCAI 2019, "Instance Relation Network for overlapping cervical cell
segmentation"): Mask R-CNN plus two relation modules, built on torchvision's ``RoIHeads``.

* Instance Relation Module (IRM, Sec. 2.1): a convolutional encoder fuses each instance's
  mask-head features with its predicted mask; instances of one image and one class exchange
  those fused features (the paper's "class-specific instance association", Sec. 1) through a
  softmax-normalised association matrix computed from 16 channel groups, scaled by a
  learnable ``gamma`` that starts at 0; a 2x2 deconvolution and a 1x1 classifier
  give refined masks trained with BCE (``loss_irm``). Switches ``irm_deep_features`` (DF),
  ``irm_mask`` (MSK) and ``irm_relation`` (RL) give the rows of Table 2.
* Sparse Duplicate Removal Module (DRM, Sec. 2.2, after Hu et al. 2018 "Relation networks
  for object detection"): the top-N scored detections attend to each other through
  appearance and relative-geometry attention restricted to each box's top-k partners of its
  own class (duplicates are per class, as NMS and Hu et al.'s duplicate removal treat them;
  ``drm_class_specific``), and a BCE head (``loss_drm``) predicts whether a detection is the
  correct one for its object or a duplicate; detections are ranked by class score x correct
  probability before NMS. The DRM is trained on what it sees at test: the box branch's
  outputs on the RPN's proposals, *without* the ground-truth boxes torchvision appends to the
  sampled RoIs (those sit at IoU 1 and would nearly always be the "correct" one), and its BCE
  weights the few correct detections up (``drm_pos_weight``, "balanced": negatives/positives
  of the batch) so that they count as much as the many duplicates.

The total loss is torchvision's Mask R-CNN losses + ``alpha`` L_DRM + ``beta`` L_IRM
(Sec. 2.3); a switched-off module adds no parameters and no loss key, so ``irm=False,
drm=False`` is exactly the Mask R-CNN baseline.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import (RoIHeads, fastrcnn_loss, maskrcnn_inference,
                                                    maskrcnn_loss)
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

from overlapseg.models.maskrcnn import build_maskrcnn_from_params, roi_heads_arguments
from overlapseg.models.scope import ScopedRoIHeads

IRNET_DEFAULTS = {
    # module switches (Table 1: Mask R-CNN = both off, "w/o IRM", "w/o DRM", full)
    "irm": True,
    "drm": True,
    # IRM inputs and relation learning (Table 2: DF / MSK / RL)
    "irm_deep_features": True,
    "irm_mask": True,
    "irm_relation": True,
    "irm_groups": 16,  # channel groups B_j of the association matrix (Sec. 2.1)
    "irm_encoder_convs": 2,  # 3x3 conv + ReLU layers of the encoder E
    # DRM
    "drm_top_n": 300,  # scored detections per image entering the DRM (before NMS)
    "drm_top_k": 40,  # partners each box attends to (sparsity constraint, Sec. 2.2)
    "drm_dim": 128,  # embedding width of the relation module (Hu et al. 2018)
    "drm_heads": 16,
    "drm_iou_threshold": 0.5,  # IoU a "correct" detection needs with its ground truth
    "drm_class_specific": True,  # relation (softmax, top-k) only among detections of one class
    "drm_pos_weight": "balanced",  # BCE weight of "correct" targets: "balanced" or a number
    # loss weights (Sec. 2.3)
    "alpha": 1.0,
    "beta": 1.0,
}

# Named rows of the paper's ablations as overrides of IRNET_DEFAULTS.
IRNET_ABLATIONS = {
    "maskrcnn": {"irm": False, "drm": False},
    "irnet_wo_irm": {"irm": False},
    "irnet_wo_drm": {"drm": False},
    "irnet": {},
    "irm_df_msk": {"irm_relation": False},
    "irm_df_rl": {"irm_mask": False},
    "irm_msk_rl": {"irm_deep_features": False},
}


# ----------------------------------------------------------------------------- pure helpers
def instance_relation_matrix(fused: Tensor, counts: list[int], groups: int = 16,
                             labels: Tensor | None = None) -> Tensor:
    """Association matrix D (n x n) of IRM (Sec. 2.1) for the instances of a whole batch.

    ``fused``: (n, C, H, W) encoder features, the instances of image 0 first, then image 1, ...
    (``counts`` per image); ``labels`` (n,) their classes, None for one class. Channels are
    averaged within each of ``groups`` groups (B_j, one map per instance), D_j = B_j B_j^T, and
    D is the row softmax of their mean, taken only over instances of the same image and class
    (other entries are exactly 0: D is block-diagonal by image and class). The mean is divided by
    sqrt(H W) as in scaled dot-product attention (Vaswani et al., cited by the paper for the
    mechanism) so the softmax does not saturate on 196-dimensional products.
    """
    if fused.dim() != 4:
        raise ValueError(f"fused features must be (n, C, H, W), got {tuple(fused.shape)}")
    n, channels, h, w = fused.shape
    if groups < 1 or channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} groups")
    if any(c < 0 for c in counts) or sum(counts) != n:
        raise ValueError(f"instance counts {list(counts)} do not add up to {n} instances")
    grouped = fused.reshape(n, groups, channels // groups, h * w).mean(2)  # (n, groups, hw)
    affinity = torch.einsum("pgk,qgk->pq", grouped, grouped) / (groups * math.sqrt(h * w))
    image = torch.repeat_interleave(torch.arange(len(counts), device=fused.device),
                                    torch.as_tensor(counts, device=fused.device), output_size=n)
    related = image[:, None] == image[None, :]
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"need one label per instance, got {tuple(labels.shape)} for {n}")
        related &= labels[:, None] == labels[None, :]
    return affinity.masked_fill(~related, float("-inf")).softmax(dim=1)


def top_k_relation_mask(logits: Tensor, k: int) -> Tensor:
    """Boolean mask keeping, in every row of ``logits`` (..., n, n), its ``k`` largest entries.

    The sparsity constraint of the DRM (Sec. 2.2): a box passes messages only from the boxes
    with its top-k relation weights (ranking logits ranks the softmax weights alike).
    """
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    mask = torch.zeros_like(logits, dtype=torch.bool)
    if logits.shape[-1] == 0:
        return mask
    index = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return mask.scatter_(-1, index, True)


def duplicate_labels(boxes: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                     iou_threshold: float = 0.5) -> Tensor:
    """DRM targets (Sec. 2.3): 1 for the detection with the highest IoU to a ground-truth box
    of its class, when that IoU is at least ``iou_threshold``; 0 (duplicate) for all others.

    Ties go to the earlier detection (detections come sorted by score).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or len(labels) != len(boxes):
        raise ValueError(f"need boxes (n, 4) and n labels, got {tuple(boxes.shape)} and {len(labels)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4 or len(gt_labels) != len(gt_boxes):
        raise ValueError(f"need gt boxes (g, 4) and g labels, got {tuple(gt_boxes.shape)} "
                         f"and {len(gt_labels)}")
    target = torch.zeros(len(boxes), dtype=boxes.dtype, device=boxes.device)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return target
    iou = box_iou(gt_boxes.to(boxes), boxes) * (gt_labels[:, None] == labels[None, :])
    best_iou, best = iou.max(dim=1)
    target[best[best_iou >= iou_threshold]] = 1.0
    return target


def drm_positive_weight(labels: Tensor, pos_weight: float | str) -> Tensor:
    """``pos_weight`` of the DRM's BCE: a number, or "balanced" = negatives / positives of
    ``labels`` (1 when there are no positives or more positives than negatives)."""
    if pos_weight == "balanced":
        positives = labels.sum()
        if positives == 0:
            return torch.ones((), dtype=labels.dtype, device=labels.device)
        return ((len(labels) - positives) / positives).clamp(min=1.0).to(labels.dtype)
    return torch.tensor(float(pos_weight), dtype=labels.dtype, device=labels.device)


def sinusoidal_embedding(x: Tensor, dim: int, wave_length: float = 1000.0) -> Tensor:
    """(...) -> (..., dim) sine/cosine encoding of scalars (ranks, geometry) as in Hu et al. 2018."""
    exponent = torch.arange(dim // 2, dtype=x.dtype, device=x.device) * (2.0 / dim)
    angles = x[..., None] / wave_length ** exponent
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def relative_geometry(boxes: Tensor) -> Tensor:
    """(n, 4) xyxy -> (n, n, 4) scale-invariant offsets of box q relative to box p (Hu et al.)."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    centre = (boxes[:, 2:] + boxes[:, :2]) / 2
    offset = ((centre[None, :] - centre[:, None]).abs() / wh[:, None]).clamp(min=1e-3).log()
    scale = (wh[None, :] / wh[:, None]).log()
    return torch.cat([offset, scale], dim=-1)


def class_ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """Rank (0 = best) of each detection's score among the detections of its class."""
    same = labels[:, None] == labels[None, :]
    index = torch.arange(len(scores), device=scores.device)
    ahead = (scores[None, :] > scores[:, None]) | ((scores[None, :] == scores[:, None])
                                                   & (index[None, :] < index[:, None]))
    return (same & ahead).sum(dim=1)


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- modules
class InstanceRelationModule(nn.Module):
    """IRM (Sec. 2.1): encoder E on [deep features, predicted mask], relation message passing
    A'_p = gamma sum_q D_pq A_q + A_p, then 2x2 stride-2 deconvolution and a 1x1 classifier.

    ``deep_features``/``mask``/``relation`` are the DF/MSK/RL switches of Table 2; without RL
    the encoder's features go straight to the deconvolution ("DF + MSK" row).
    """

    def __init__(self, feature_channels: int, num_classes: int, deep_features: bool = True,
                 mask: bool = True, relation: bool = True, groups: int = 16, encoder_convs: int = 2):
        super().__init__()
        if not (deep_features or mask):
            raise ValueError("IRM needs deep features (DF), the predicted mask (MSK) or both")
        if encoder_convs < 1:
            raise ValueError(f"irm_encoder_convs must be >= 1, got {encoder_convs}")
        if relation and feature_channels % groups:
            raise ValueError(f"mask head width {feature_channels} is not divisible into "
                             f"{groups} IRM groups")
        self.deep_features, self.mask, self.groups = deep_features, mask, groups
        layers, width = [], feature_channels * deep_features + mask
        for _ in range(encoder_convs):
            layers += [nn.Conv2d(width, feature_channels, 3, padding=1), nn.ReLU(inplace=True)]
            width = feature_channels
        self.encoder = nn.Sequential(*layers)
        self.gamma = nn.Parameter(torch.zeros(())) if relation else None
        self.upsample = nn.ConvTranspose2d(feature_channels, feature_channels, 2, stride=2)
        self.classifier = nn.Conv2d(feature_channels, num_classes, 1)
        _init_convs(self)

    def relate(self, fused: Tensor, counts: list[int], labels: Tensor | None = None) -> Tensor:
        """Equation (1): add the gamma-weighted, relation-averaged features of the same image
        (and class, given ``labels``)."""
        if self.gamma is None:
            return fused
        weights = instance_relation_matrix(fused, counts, self.groups, labels)
        message = (weights @ fused.flatten(1)).view_as(fused)
        return self.gamma * message + fused

    def forward(self, deep: Tensor, mask_logits: Tensor, labels: Tensor, counts: list[int]) -> Tensor:
        """``deep`` (n, C, 14, 14) mask-head features, ``mask_logits`` (n, K, 28, 28) of the mask
        predictor, ``labels`` (n,) the class whose mask is used -> refined logits (n, K, 28, 28)."""
        inputs = []
        if self.deep_features:
            inputs.append(deep)
        if self.mask:
            # only the mask of the instance's class is kept (Sec. 3, MSK), at the features' size
            chosen = mask_logits[torch.arange(len(labels), device=labels.device), labels]
            inputs.append(F.adaptive_avg_pool2d(chosen[:, None].sigmoid(), deep.shape[-2:]))
        fused = self.relate(self.encoder(torch.cat(inputs, dim=1)), counts, labels)
        return self.classifier(F.relu(self.upsample(fused)))


class DuplicateRemovalModule(nn.Module):
    """Sparse DRM (Sec. 2.2): relation module over one image's detections -> correct logit each.

    Each detection is embedded from its appearance (box-head feature), its score rank within
    its class and its class; multi-head attention combines appearance similarity with a
    learned relative-geometry weight (Hu et al. 2018). Each box attends only to the ``top_k``
    boxes with its largest head-averaged relation logits (the paper ranks partners per target
    and does not say per head; one shared top-k is also 16x cheaper on CPU), and with
    ``class_specific`` only to boxes of its own class.
    """

    GEOMETRY_DIM = 64  # sine/cosine features of the 4 relative-geometry terms (Hu et al.)

    def __init__(self, feature_dim: int, num_classes: int, dim: int = 128, heads: int = 16,
                 top_k: int = 40, class_specific: bool = True):
        super().__init__()
        if dim % heads or dim % 2:
            raise ValueError(f"drm_dim {dim} must be even and divisible by drm_heads {heads}")
        if top_k < 1:
            raise ValueError(f"drm_top_k must be >= 1, got {top_k}")
        self.dim, self.heads, self.top_k, self.class_specific = dim, heads, top_k, class_specific
        self.appearance = nn.Linear(feature_dim, dim)
        self.rank = nn.Linear(dim, dim)
        self.label = nn.Embedding(num_classes, dim)
        self.geometry = nn.Linear(self.GEOMETRY_DIM, heads)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.out = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 1)

    def embed_and_relate(self, features: Tensor, boxes: Tensor, scores: Tensor,
                         labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embeddings x (n, dim), relation weights (heads, n, n; each row a softmax over the
        box's kept partners, 0 elsewhere) and values (heads, n, dim / heads)."""
        n = len(boxes)
        if features.shape[0] != n or len(scores) != n or len(labels) != n:
            raise ValueError("features, boxes, scores and labels must describe the same detections")
        ranks = class_ranks(scores, labels).float()
        x = (self.appearance(features) + self.rank(sinusoidal_embedding(ranks, self.dim))
             + self.label(labels))
        d = self.dim // self.heads
        q, k, v = (f(x).view(n, self.heads, d).transpose(0, 1) for f in (self.query, self.key, self.value))
        geometry = sinusoidal_embedding(100.0 * relative_geometry(boxes.float()),
                                        self.GEOMETRY_DIM // 4).flatten(-2)
        geometry_weight = F.relu(self.geometry(geometry)).permute(2, 0, 1)  # (heads, n, n)
        logits = q @ k.transpose(1, 2) / math.sqrt(d) + geometry_weight.clamp(min=1e-6).log()
        related = torch.ones((n, n), dtype=torch.bool, device=logits.device)
        if self.class_specific:
            related = labels[:, None] == labels[None, :]
            logits = logits.masked_fill(~related, float("-inf"))
        # one neighbourhood per box, shared by the heads: its top-k by head-averaged logit
        keep = top_k_relation_mask(logits.detach().mean(0), self.top_k) & related
        weights = logits.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        return x, weights, v

    def forward(self, features: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor) -> Tensor:
        x, weights, v = self.embed_and_relate(features, boxes, scores, labels)
        x = x + self.out((weights @ v).transpose(0, 1).reshape(len(boxes), self.dim))
        return self.classifier(F.relu(x)).squeeze(1)


# ----------------------------------------------------------------------------- ROI heads
class IRNetRoIHeads(ScopedRoIHeads):  # scope: models.scope
    """torchvision ``RoIHeads`` whose forward adds the DRM after the box branch and the IRM
    after the mask branch; everything else (sampling, box/mask heads, their losses, NMS
    post-processing when the DRM is off) is torchvision's.
    """

    def __init__(self, *args, irm: InstanceRelationModule | None = None,
                 drm: DuplicateRemovalModule | None = None, alpha: float = 1.0, beta: float = 1.0,
                 drm_top_n: int = 300, drm_iou_threshold: float = 0.5,
                 drm_pos_weight: float | str = "balanced", **kwargs):
        super().__init__(*args, **kwargs)
        if alpha < 0 or beta < 0:
            raise ValueError(f"loss weights must be >= 0, got alpha={alpha}, beta={beta}")
        if drm_top_n < 1:
            raise ValueError(f"drm_top_n must be >= 1, got {drm_top_n}")
        self.irm, self.drm = irm, drm
        self.alpha, self.beta = alpha, beta
        self.drm_top_n, self.drm_iou_threshold = drm_top_n, drm_iou_threshold
        self.drm_pos_weight = drm_pos_weight

    @classmethod
    def from_base(cls, base: RoIHeads, p: dict) -> "IRNetRoIHeads":
        """Share ``base``'s heads and settings; build the IRM/DRM ``p`` (IRNET_DEFAULTS keys) asks for."""
        num_classes = base.box_predictor.cls_score.out_features
        irm = drm = None
        if p["irm"]:
            irm = InstanceRelationModule(base.mask_predictor.conv5_mask.in_channels, num_classes,
                                         p["irm_deep_features"], p["irm_mask"], p["irm_relation"],
                                         p["irm_groups"], p["irm_encoder_convs"])
        if p["drm"]:
            drm = DuplicateRemovalModule(base.box_predictor.cls_score.in_features, num_classes,
                                         p["drm_dim"], p["drm_heads"], p["drm_top_k"],
                                         p["drm_class_specific"])
        return cls(**roi_heads_arguments(base), irm=irm, drm=drm, alpha=p["alpha"], beta=p["beta"],
                   drm_top_n=p["drm_top_n"], drm_iou_threshold=p["drm_iou_threshold"],
                   drm_pos_weight=p["drm_pos_weight"])

    # -- DRM
    def drm_candidates(self, class_logits: Tensor, box_regression: Tensor, proposals: list[Tensor],
                       image_shapes: list[tuple[int, int]]) -> list[tuple[Tensor, ...]]:
        """Per image, the ``drm_top_n`` best (box, class) pairs before NMS: boxes, scores,
        labels and the row of their proposal in the batch (to fetch its appearance feature)."""
        # float32 geometry and scores even under autocast; the DRM loss does not move boxes/scores
        decoded = self.box_coder.decode(box_regression.detach().float(), proposals)
        probs = F.softmax(class_logits.detach().float(), dim=-1)
        num_classes = probs.shape[-1]
        out, start = [], 0
        for props, shape in zip(proposals, image_shapes):
            rows = torch.arange(start, start + len(props), device=probs.device)
            start += len(props)
            boxes = clip_boxes_to_image(decoded[rows], shape)[:, 1:].reshape(-1, 4)
            scores = probs[rows, 1:].reshape(-1)
            labels = torch.arange(1, num_classes, device=probs.device).repeat(len(rows))
            source = rows.repeat_interleave(num_classes - 1)
            keep = remove_small_boxes(boxes, min_size=1e-2)
            keep = keep[scores[keep] > self.score_thresh]
            keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices[:self.drm_top_n]]
            out.append((boxes[keep], scores[keep], labels[keep], source[keep]))
        return out

    def drm_training_candidates(self, features, proposals: list[Tensor],
                                image_shapes: list[tuple[int, int]]):
        """DRM inputs as at test: the box branch on the RPN's own ``proposals`` (no appended
        ground truth, no sampling), its top-N candidates, and their appearance features.

        Choosing candidates needs no gradient; only the chosen proposals' box features are
        recomputed with one, so the DRM loss trains the box head on what it ranks.
        """
        with torch.no_grad():
            class_logits, box_regression = self.box_predictor(
                self.box_head(self.box_roi_pool(features, proposals, image_shapes)))
        candidates = self.drm_candidates(class_logits, box_regression, proposals, image_shapes)
        chosen, out, start, offset = [], [], 0, 0
        for (boxes, scores, labels, source), props in zip(candidates, proposals):
            chosen.append(props[source - start])
            out.append((boxes, scores, labels,
                        torch.arange(offset, offset + len(source), device=source.device)))
            start += len(props)
            offset += len(source)
        box_features = self.box_head(self.box_roi_pool(features, chosen, image_shapes))
        return box_features, out

    def drm_loss(self, box_features: Tensor, candidates, targets: list[dict]) -> Tensor:
        """BCE of the correct/duplicate logits; "balanced" weights positives by negatives /
        positives of the batch (at least 1), so a DRM that calls everything a duplicate is not
        nearly optimal."""
        logits, labels = [], []
        for (boxes, scores, cls, source), t in zip(candidates, targets):
            logits.append(self.drm(box_features[source], boxes, scores, cls))
            labels.append(duplicate_labels(boxes, cls, t["boxes"], t["labels"], self.drm_iou_threshold))
        logits, labels = torch.cat(logits), torch.cat(labels)
        if logits.numel() == 0:
            return box_features.sum() * 0.0
        return F.binary_cross_entropy_with_logits(
            logits, labels, pos_weight=drm_positive_weight(labels, self.drm_pos_weight))

    def drm_detections(self, box_features: Tensor, candidates):
        """Rank by class score x correct probability, then class-wise NMS (Sec. 2.2)."""
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, labels, source in candidates:
            scores = scores * self.drm(box_features[source], boxes, scores, labels).sigmoid()
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels

    # -- forward
    @staticmethod
    def _check_targets(targets: list[dict]) -> None:
        for i, t in enumerate(targets):
            boxes, labels, masks = t["boxes"], t["labels"], t["masks"]
            if not boxes.is_floating_point() or boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"target {i}: boxes must be float (N, 4), got {boxes.dtype} "
                                 f"{tuple(boxes.shape)}")
            if labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
                raise ValueError(f"target {i}: labels must be int64 (N,), got {labels.dtype} "
                                 f"{tuple(labels.shape)}")
            if masks.dim() != 3 or len(masks) != len(boxes):
                raise ValueError(f"target {i}: masks must be (N, H, W), got {tuple(masks.shape)}")

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            self.check_targets(targets)
            self._check_targets(targets)
            rpn_proposals = proposals  # what the DRM ranks at test: no GT boxes, not sampled
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        losses, result = {}, []
        if self.training:
            losses["loss_classifier"], losses["loss_box_reg"] = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets)
            if self.drm is not None:
                drm_features, candidates = self.drm_training_candidates(features, rpn_proposals,
                                                                        image_shapes)
                losses["loss_drm"] = self.alpha * self.drm_loss(drm_features, candidates, targets)
            positive = [torch.where(lab > 0)[0] for lab in labels]
            mask_boxes = [p[i] for p, i in zip(proposals, positive)]
            mask_matched = [m[i] for m, i in zip(matched_idxs, positive)]
            mask_labels = [lab[i] for lab, i in zip(labels, positive)]  # ground-truth class
        else:
            if self.drm is not None:
                candidates = self.drm_candidates(class_logits, box_regression, proposals, image_shapes)
                boxes, scores, mask_labels = self.drm_detections(box_features, candidates)
            else:
                boxes, scores, mask_labels = self.postprocess_detections(
                    class_logits, box_regression, proposals, image_shapes)
            mask_boxes = boxes
            result = [{"boxes": b, "labels": lab, "scores": s}
                      for b, lab, s in zip(boxes, mask_labels, scores)]

        deep = self.mask_head(self.mask_roi_pool(features, mask_boxes, image_shapes))
        mask_logits = self.mask_predictor(deep)
        refined = None
        if self.irm is not None:
            refined = self.irm(deep, mask_logits, torch.cat(mask_labels), [len(b) for b in mask_boxes])

        if self.training:
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            losses["loss_mask"] = maskrcnn_loss(mask_logits, mask_boxes, gt_masks, gt_labels, mask_matched)
            if refined is not None:
                losses["loss_irm"] = self.beta * maskrcnn_loss(refined, mask_boxes, gt_masks, gt_labels,
                                                               mask_matched)
        else:
            probs = maskrcnn_inference(refined if refined is not None else mask_logits, mask_labels)
            for r, prob in zip(result, probs):
                r["masks"] = prob
        return result, losses


# ----------------------------------------------------------------------------- builders
def irnet_options(p: dict) -> dict:
    """The IRNet part of ``p``, IRNET_DEFAULTS filled in and checked (other keys are ignored)."""
    unknown = [k for k in p if k.startswith(("irm_", "drm_")) and k not in IRNET_DEFAULTS]
    if unknown:
        raise KeyError(f"unknown IRNet params {unknown} (known: {sorted(IRNET_DEFAULTS)})")
    q = {k: p.get(k, v) for k, v in IRNET_DEFAULTS.items()}
    for key in ("irm", "drm", "irm_deep_features", "irm_mask", "irm_relation"):
        if not isinstance(q[key], bool):
            raise ValueError(f"IRNet switch {key!r} must be true or false, got {q[key]!r}")
    if not isinstance(q["drm_class_specific"], bool):
        raise ValueError(f"drm_class_specific must be true or false, got {q['drm_class_specific']!r}")
    weight = q["drm_pos_weight"]
    if weight != "balanced" and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                                 or weight <= 0):
        raise ValueError(f'drm_pos_weight must be "balanced" or a number > 0, got {weight!r}')
    if q["irm"] and not (q["irm_deep_features"] or q["irm_mask"]):
        raise ValueError("irm needs irm_deep_features, irm_mask or both (Table 2 has no row without)")
    return q


def irnet_roi_heads(p: dict):
    """The ``roi_heads`` factory for :func:`~overlapseg.models.maskrcnn.build_maskrcnn_from_params`."""
    q = irnet_options(p)
    return lambda base: IRNetRoIHeads.from_base(base, q)


def build_irnet(p: dict, frozen_bn: bool = False) -> MaskRCNN:
    """IRNet on the Mask R-CNN ``p`` describes (Mask R-CNN keys + any IRNET_DEFAULTS keys,
    missing ones at their defaults). ``frozen_bn``: FrozenBN backbone and ImageNet
    normalisation, for pretrained weights."""
    return build_maskrcnn_from_params(p, frozen_bn, roi_heads=irnet_roi_heads(p))

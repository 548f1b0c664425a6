"""Annotation scope in the detectors: images whose source does not annotate a class (issue 28).

A training target may carry ``annotated``: a bool tensor over label ids (index 0 background,
then the category ids; :func:`scope_tensor`) saying which classes the image's source annotates.
On an image of a nuclei-only source a cell is present but unannotated, so the cytoplasm class
must be trained neither as an object nor as background there:

* box classifier (:class:`ScopedRoIHeads` + :class:`ScopedPredictor`): for the sampled
  proposals of such an image, the logits of the unannotated classes are set to -inf before
  torchvision's ``fastrcnn_loss``, so its cross-entropy runs over background and the annotated
  classes only. A proposal on a cell then still learns "not a nucleus" (true), its
  cytoplasm logit gets no gradient, and positives only ever carry annotated labels. Chosen
  over dropping the background proposals of those images, which would keep the synthetic data
  from teaching nucleus vs debris; the price is that the shared background logit also learns
  on those proposals, which the real images' cytoplasm positives balance (set ``inputs.mix``).
* RPN (:class:`ScopedRPN`): objectness is class-agnostic, so a negative anchor on such an image
  may lie on an unannotated cell; its negatives are ignored (label -1, as anchors between
  the IoU thresholds), its positives kept. A batch left with no sampled anchor gives zero
  losses instead of torchvision's NaN.
* masks and box regression train on positives only (annotated classes): nothing to change.
* keypoint heatmaps (CC framework, :func:`detach_unannotated`): the channels of unannotated
  classes are detached on those images, so they get no gradient (their offsets and
  displacements already have zero weight: no disc of that class is drawn).

Targets without ``annotated`` are fully annotated; state dicts are those of the torchvision
classes (subclasses add no parameters).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from overlapseg.data.training_sources import annotated_labels

SCOPE_KEY = "annotated"


def scope_tensor(annotated: Sequence[str]) -> Tensor:
    """``targets[i]["annotated"]`` of an image whose source annotates the categories named."""
    return torch.tensor(annotated_labels(annotated), dtype=torch.bool)


def unannotated_rows(targets: list[dict] | None, counts: Sequence[int], num_classes: int,
                     device) -> Tensor | None:
    """(sum(counts), num_classes) bool: True for the logits of classes the image of each row
    does not annotate (image ``i`` owns ``counts[i]`` consecutive rows); None when every image
    is fully annotated."""
    if not targets or all(SCOPE_KEY not in t or bool(t[SCOPE_KEY].all()) for t in targets):
        return None
    rows = []
    for t, n in zip(targets, counts):
        scope = t.get(SCOPE_KEY)
        scope = (torch.ones(num_classes, dtype=torch.bool, device=device) if scope is None
                 else scope.to(device=device, dtype=torch.bool))
        if scope.shape != (num_classes,):
            raise ValueError(f"target {SCOPE_KEY!r} has {tuple(scope.shape)} entries for "
                             f"{num_classes} classes (background first)")
        rows.append((~scope)[None].expand(int(n), -1))
    return torch.cat(rows)


class ScopedPredictor(FastRCNNPredictor):
    """torchvision's box predictor; in training, the logits ``excluded`` marks (set by
    :class:`ScopedRoIHeads` for the batch about to be classified, used once) are -inf."""

    excluded: Tensor | None = None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores, deltas = super().forward(x)
        excluded, self.excluded = self.excluded, None
        if self.training and excluded is not None:
            if excluded.shape != scores.shape:
                raise RuntimeError(f"scope mask {tuple(excluded.shape)} does not fit the class "
                                   f"logits {tuple(scores.shape)}")
            scores = scores.masked_fill(excluded, float("-inf"))
        return scores, deltas


class ScopedRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` whose sampled proposals of partially annotated images leave
    the unannotated classes out of the box classification (module docstring)."""

    def select_training_samples(self, proposals, targets):
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(
            proposals, targets)
        if isinstance(self.box_predictor, ScopedPredictor):
            num_classes = self.box_predictor.cls_score.out_features
            excluded = unannotated_rows(targets, [len(lab) for lab in labels], num_classes,
                                        labels[0].device if labels else "cpu")
            if excluded is not None and bool(excluded.gather(1, torch.cat(labels)[:, None]).any()):
                raise ValueError("a target holds instances of a class its 'annotated' scope excludes")
            self.box_predictor.excluded = excluded
        return proposals, matched_idxs, labels, regression_targets


class ScopedRPN(RegionProposalNetwork):
    """torchvision's RPN; negatives of partially annotated images are ignored (module docstring)."""

    @classmethod
    def from_base(cls, base: RegionProposalNetwork) -> "ScopedRPN":
        return cls(base.anchor_generator, base.head, base.proposal_matcher.high_threshold,
                   base.proposal_matcher.low_threshold, base.fg_bg_sampler.batch_size_per_image,
                   base.fg_bg_sampler.positive_fraction, dict(base._pre_nms_top_n),
                   dict(base._post_nms_top_n), base.nms_thresh, base.score_thresh)

    def assign_targets_to_anchors(self, anchors, targets):
        labels, matched = super().assign_targets_to_anchors(anchors, targets)
        for lab, t in zip(labels, targets):
            if SCOPE_KEY in t and not bool(t[SCOPE_KEY].all()):
                lab[lab == 0] = -1.0  # unknown: may lie on an unannotated object
        return labels, matched

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        if not any(bool((lab >= 0).any()) for lab in labels):
            zero = objectness.sum() * 0.0 + pred_bbox_deltas.sum() * 0.0
            return zero, zero
        return super().compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)


def detach_unannotated(x: Tensor, targets: list[dict] | None, class_dim: int = 1) -> Tensor:
    """``x`` (batch first, one slice per class along ``class_dim``, class ``c`` = label
    ``c + 1``) with the slices of classes an image does not annotate detached (no gradient)."""
    if class_dim != 1:
        raise ValueError("detach_unannotated expects the class axis at dim 1")
    if not targets or all(SCOPE_KEY not in t or bool(t[SCOPE_KEY].all()) for t in targets):
        return x
    num = x.shape[class_dim]
    keep = torch.stack([t[SCOPE_KEY][1:].to(x.device) if SCOPE_KEY in t
                        else torch.ones(num, dtype=torch.bool, device=x.device) for t in targets])
    shape = [len(targets), num] + [1] * (x.dim() - 2)
    return torch.where(keep.view(shape), x, x.detach())


def class_scope(targets: list[dict], num_classes: int, device) -> Tensor | None:
    """(B, num_classes) bool: per image, whether its source annotates each category (class
    ``c`` = label ``c + 1``); None when every image is fully annotated."""
    if all(SCOPE_KEY not in t or bool(t[SCOPE_KEY].all()) for t in targets):
        return None
    return torch.stack([t[SCOPE_KEY][1:].to(device=device, dtype=torch.bool) if SCOPE_KEY in t
                        else torch.ones(num_classes, dtype=torch.bool, device=device)
                        for t in targets])

"""Focal losses for the overlap head, optionally guided by an overlap-probability map.

Brightfield thesis (``003``), Sec. 4.3 Eq. 4.5 and Sec. 5.4 Eq. 5.1:

* ``recalibrate`` (the thesis' main method, Eq. 4.5): binary focal loss with the soft target
  ``y' = y * (1 - P)``, averaged over pixels.
* ``reweight`` (the alternative of Eq. 5.1): the per-pixel focal loss on the original target
  ``y`` multiplied by ``P`` and averaged, ``mean(P * L_focal(y, y_hat))``.

The focal loss is the one of Lin et al. (RetinaNet), written for soft targets as in Eq. 4.5:
``-a (1-p)^g y log p - (1-a) p^g (1-y) log(1-p)`` with ``p = sigmoid(logit)``. Logs come from
``logsigmoid`` so large logits neither overflow nor give ``log(0)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("recalibrate", "reweight")


def binary_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                      gamma: float = 2.0, reduction: str = "none") -> torch.Tensor:
    """Per-pixel binary focal loss from logits; ``target`` may be soft (values in [0, 1]).

    ``alpha`` weights the positive term, ``1 - alpha`` the negative term (thesis Eq. 4.5).
    ``reduction``: ``"none"`` (same shape as ``logits``), ``"mean"`` or ``"sum"``.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} != target shape {tuple(target.shape)}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r} (none | mean | sum)")
    target = target.to(logits.dtype)
    log_p = F.logsigmoid(logits)        # log p
    log_not_p = F.logsigmoid(-logits)   # log (1 - p)
    p = torch.exp(log_p)
    not_p = torch.exp(log_not_p)
    loss = (-alpha * not_p.pow(gamma) * target * log_p
            - (1.0 - alpha) * p.pow(gamma) * (1.0 - target) * log_not_p)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def masked_mean(loss: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``loss`` over the pixels where ``valid`` (same shape, 0/1) is 1; ``valid`` None:
    the plain mean. No valid pixel gives 0, still attached to the graph."""
    if valid is None:
        return loss.mean()
    valid = valid.to(loss.dtype)
    return (loss * valid).sum() / valid.sum().clamp_min(1)


def recalibrated_focal_loss(logits: torch.Tensor, target: torch.Tensor,
                            prob_map: torch.Tensor | None = None, mode: str = "recalibrate",
                            alpha: float = 0.25, gamma: float = 2.0,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar overlap loss guided by an overlap-probability map ``P`` (same shape as logits).

    ``mode="recalibrate"``: mean focal loss with targets ``y * (1 - P)`` (thesis Eq. 4.5).
    ``mode="reweight"``: ``mean(P * focal(y))`` (thesis Eq. 5.1).
    ``prob_map=None`` gives the plain mean focal loss in both modes. ``valid`` (0/1, same
    shape): the mean runs over these pixels only (targets unknown elsewhere: a source that
    does not annotate cells, issue 28).
    """
    if mode not in MODES:
        raise ValueError(f"unknown focal-loss mode {mode!r} (recalibrate | reweight)")
    if valid is not None and valid.shape != logits.shape:
        raise ValueError(f"valid shape {tuple(valid.shape)} != logits shape {tuple(logits.shape)}")
    if prob_map is None:
        if valid is None:
            return binary_focal_loss(logits, target, alpha, gamma, reduction="mean")
        return masked_mean(binary_focal_loss(logits, target, alpha, gamma), valid)
    if prob_map.shape != logits.shape:
        raise ValueError(f"prob_map shape {tuple(prob_map.shape)} != logits shape "
                         f"{tuple(logits.shape)}")
    prob_map = prob_map.to(logits.dtype)
    target = target.to(logits.dtype)
    if mode == "recalibrate":
        if valid is None:
            return binary_focal_loss(logits, target * (1.0 - prob_map), alpha, gamma,
                                     reduction="mean")
        return masked_mean(binary_focal_loss(logits, target * (1.0 - prob_map), alpha, gamma), valid)
    return masked_mean(prob_map * binary_focal_loss(logits, target, alpha, gamma), valid)

"""Focal losses of the overlap head (thesis Eq. 4.5 / 5.1) against hand-computed values."""
import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from overlapseg.maps.losses import binary_focal_loss, recalibrated_focal_loss

LN2 = math.log(2.0)


def test_focal_hand_computed():
    # p = sigmoid(0) = 0.5 and p = sigmoid(ln 3) = 0.75
    logits = torch.tensor([0.0, 0.0, math.log(3.0), math.log(3.0)], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    expected = torch.tensor([
        0.25 * 0.5 ** 2 * LN2,                       # y=1, p=.5: a (1-p)^2 (-log p)
        0.75 * 0.5 ** 2 * LN2,                       # y=0, p=.5: (1-a) p^2 (-log(1-p))
        0.25 * 0.25 ** 2 * -math.log(0.75),          # y=1, p=.75
        0.75 * 0.75 ** 2 * -math.log(0.25),          # y=0, p=.75
    ], dtype=torch.float64)
    got = binary_focal_loss(logits, target)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(binary_focal_loss(logits, target, reduction="mean"), expected.mean())
    torch.testing.assert_close(binary_focal_loss(logits, target, reduction="sum"), expected.sum())


def test_focal_matches_torchvision_for_binary_targets():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64) * 3
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).double()
    ours = binary_focal_loss(logits, target, alpha=0.3, gamma=1.5)
    ref = sigmoid_focal_loss(logits, target, alpha=0.3, gamma=1.5, reduction="none")
    torch.testing.assert_close(ours, ref)


def test_focal_stable_for_extreme_logits():
    logits = torch.tensor([-200.0, 200.0, -200.0, 200.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = binary_focal_loss(logits, target, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # confidently wrong pixels cost ~ alpha * 200 and (1 - alpha) * 200
    torch.testing.assert_close(loss, torch.tensor(0.25 * 200 + 0.75 * 200))


def test_recalibrate_uses_soft_target_y_times_one_minus_p():
    logits = torch.zeros(2, dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    prob = torch.tensor([0.5, 0.9], dtype=torch.float64)
    # pixel 0: y' = 0.5 -> half positive, half negative term; pixel 1: y' = 0 -> negative term
    pos, neg = 0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2
    expected = (0.5 * pos + 0.5 * neg + neg) / 2
    got = recalibrated_focal_loss(logits, target, prob, mode="recalibrate")
    assert got.ndim == 0
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_reweight_is_mean_of_p_times_focal():
    logits = torch.zeros(2, dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    prob = torch.tensor([0.5, 0.1], dtype=torch.float64)
    expected = (0.5 * 0.25 * 0.25 * LN2 + 0.1 * 0.75 * 0.25 * LN2) / 2
    got = recalibrated_focal_loss(logits, target, prob, mode="reweight")
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_no_map_is_plain_mean_focal_and_errors():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 4, generator=g)
    target = (torch.rand(4, 4, generator=g) > 0.5).float()
    plain = binary_focal_loss(logits, target).mean()
    for mode in ("recalibrate", "reweight"):
        torch.testing.assert_close(recalibrated_focal_loss(logits, target, None, mode=mode), plain)
    with pytest.raises(ValueError, match="mode"):
        recalibrated_focal_loss(logits, target, None, mode="bogus")
    with pytest.raises(ValueError, match="prob_map shape"):
        recalibrated_focal_loss(logits, target, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="target shape"):
        binary_focal_loss(logits, target[:2])

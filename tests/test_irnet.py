import itertools
import math

import numpy as np
import pytest
import torch

from overlapseg.models.irnet import (IRNET_ABLATIONS, IRNET_DEFAULTS, DuplicateRemovalModule,
                                     InstanceRelationModule, build_irnet, drm_positive_weight,
                                     duplicate_labels, instance_relation_matrix, irnet_options,
                                     top_k_relation_mask)
from overlapseg.models.maskrcnn import MASKRCNN_DEFAULTS, build_maskrcnn

torch.set_num_threads(1)

TINY = {"depth": 18, "image_size": 64, "anchor_sizes": [16, 32, 64, 128, 256],
        "fpn_channels": 16, "mask_head_channels": 16,
        "box_head_dim": 32, "box_batch_size_per_image": 32, "rpn_post_nms_top_n_train": 100,
        "detections_per_image": 100, "drm_top_n": 100}
BASE_LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def disc_image(seed: int, size: int = 64, cells: int = 3):
    """Grey image of overlapping dark discs (cytoplasm) with darker centres (nuclei) + targets."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), 0.85, np.float32)
    masks, labels = [], []
    for _ in range(cells):
        cy, cx = rng.integers(16, size - 16, 2)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        for mask, label, shade in ((d2 <= 110, 1, 0.8), (d2 <= 10, 2, 0.6)):
            image[mask] *= shade
            masks.append(mask)
            labels.append(label)
    masks = np.stack(masks)
    boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
             for ys, xs in (np.nonzero(m) for m in masks)]
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
              "masks": torch.from_numpy(masks.astype(np.uint8))}
    return torch.from_numpy(image).expand(3, -1, -1).contiguous(), target


@pytest.fixture(scope="module")
def batch():
    pairs = [disc_image(0), disc_image(1)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def build(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_irnet({**TINY, **overrides})


def train_losses(model, batch, seed: int = 1):
    torch.manual_seed(seed)  # same ROI sampling for models compared with each other
    model.train()
    return model(*batch)


def predict(model, images):
    model.eval()
    with torch.no_grad():
        return model(images)


# ----------------------------------------------------------------------------- IRM
def test_relation_matrix_is_row_stochastic_within_each_image():
    fused = torch.randn(6, 16, 14, 14, generator=torch.Generator().manual_seed(0))
    d = instance_relation_matrix(fused, [3, 1, 2], groups=16)
    assert d.shape == (6, 6)
    assert torch.allclose(d.sum(1), torch.ones(6))
    image = torch.tensor([0, 0, 0, 1, 2, 2])
    same = image[:, None] == image[None, :]
    assert torch.all(d[~same] == 0) and torch.all(d[same] > 0)
    assert d[3, 3] == 1.0  # an instance alone in its image only relates to itself


def test_relation_matrix_is_block_diagonal_by_class():
    """IRNet's class-specific instance association: cells relate to cells, nuclei to nuclei."""
    fused = torch.randn(5, 16, 14, 14, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([1, 2, 1, 2, 1])
    d = instance_relation_matrix(fused, [5], groups=16, labels=labels)
    same = labels[:, None] == labels[None, :]
    assert torch.all(d[~same] == 0) and torch.all(d[same] > 0)
    assert torch.allclose(d.sum(1), torch.ones(5))
    # the IRM passes the instances' classes: a nucleus' features do not reach a cell
    torch.manual_seed(0)
    irm = InstanceRelationModule(16, num_classes=3)
    with torch.no_grad():
        irm.gamma.fill_(1.0)
    deep, masks = torch.randn(5, 16, 14, 14), torch.randn(5, 3, 28, 28)
    out = irm(deep, masks, labels, [5])
    deep2 = deep.clone()
    deep2[1] += 5.0                            # change a nucleus
    out2 = irm(deep2, masks, labels, [5])
    assert torch.equal(out[labels == 1], out2[labels == 1])
    assert not torch.equal(out[1], out2[1])


def test_relation_matrix_averages_group_associations():
    fused = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    groups = [fused[:, 2 * j:2 * j + 2].mean(1).flatten(1) for j in range(4)]  # B_j: (n, hw)
    mean_d = sum(b @ b.T for b in groups) / 4
    expected = (mean_d / math.sqrt(25)).softmax(1)
    assert torch.allclose(instance_relation_matrix(fused, [4], groups=4), expected, atol=1e-6)


def test_relation_matrix_rejects_bad_input():
    fused = torch.zeros(3, 16, 14, 14)
    with pytest.raises(ValueError, match="add up"):
        instance_relation_matrix(fused, [1, 1], groups=16)
    with pytest.raises(ValueError, match="groups"):
        instance_relation_matrix(fused, [3], groups=5)
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        instance_relation_matrix(fused[0], [3])


def test_gamma_starts_at_zero_as_identity_and_learns():
    torch.manual_seed(0)
    irm = InstanceRelationModule(16, num_classes=3)
    fused = torch.randn(5, 16, 14, 14)
    assert irm.gamma.item() == 0.0
    assert torch.equal(irm.relate(fused, [2, 3]), fused)
    deep, masks = torch.randn(5, 16, 14, 14), torch.randn(5, 3, 28, 28)
    refined = irm(deep, masks, torch.tensor([1, 2, 1, 1, 2]), [2, 3])
    assert refined.shape == (5, 3, 28, 28)
    refined.square().mean().backward()
    assert irm.gamma.grad is not None and irm.gamma.grad.isfinite() and irm.gamma.grad != 0
    with torch.no_grad():
        irm.gamma.fill_(0.5)
    assert not torch.equal(irm.relate(fused, [2, 3]), fused)


def test_irm_switches_change_inputs_and_relation():
    no_relation = InstanceRelationModule(16, 3, relation=False)
    assert no_relation.gamma is None
    assert InstanceRelationModule(16, 3, deep_features=False).encoder[0].in_channels == 1
    assert InstanceRelationModule(16, 3, mask=False).encoder[0].in_channels == 16
    assert InstanceRelationModule(16, 3).encoder[0].in_channels == 17
    with pytest.raises(ValueError, match="DF"):
        InstanceRelationModule(16, 3, deep_features=False, mask=False)


# ----------------------------------------------------------------------------- DRM
def test_top_k_mask_keeps_the_k_largest_per_row():
    logits = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0))
    keep = top_k_relation_mask(logits, 2)
    assert torch.all(keep.sum(-1) == 2)
    kept_min = logits.masked_fill(~keep, math.inf).amin(-1)
    dropped_max = logits.masked_fill(keep, -math.inf).amax(-1)
    assert torch.all(kept_min > dropped_max)
    assert top_k_relation_mask(logits, 40).all()  # k >= n: dense
    assert top_k_relation_mask(torch.zeros(0, 0), 3).shape == (0, 0)
    with pytest.raises(ValueError, match="k >= 1"):
        top_k_relation_mask(logits, 0)


def test_drm_attention_is_sparse():
    """With k = 1 a box's message comes from one partner: the others' values do not matter."""
    torch.manual_seed(0)
    drm = DuplicateRemovalModule(8, 3, dim=16, heads=1, top_k=1)
    features = torch.randn(4, 8)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40], [50, 0, 60, 8.]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 1, 2, 1])
    captured = {}
    drm.value.register_forward_hook(lambda m, i, o: captured.setdefault("v", o))
    drm.out.register_forward_hook(lambda m, i, o: captured.setdefault("msg", i[0]))
    drm(features, boxes, scores, labels)
    msg, v = captured["msg"], captured["v"]
    # every message row equals exactly one row of the values (attention weight 1 on one box)
    assert all(any(torch.allclose(row, vr) for vr in v) for row in msg)
    assert drm(features, boxes, scores, labels).shape == (4,)


def test_drm_relation_is_block_diagonal_by_class():
    torch.manual_seed(0)
    drm = DuplicateRemovalModule(8, 3, dim=16, heads=4, top_k=40)
    features = torch.randn(5, 8)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 6, 6], [3, 0, 12, 9],
                          [0, 1, 9, 12.]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 2, 1, 2, 1])
    _, weights, _ = drm.embed_and_relate(features, boxes, scores, labels)
    same = labels[:, None] == labels[None, :]
    assert torch.all(weights[:, ~same] == 0) and torch.all(weights[:, same] > 0)
    assert torch.allclose(weights.sum(-1), torch.ones(4, 5))
    # a nucleus' appearance changes no cell's correct-logit
    moved = features.clone()
    moved[1] += 3.0
    a, b = drm(features, boxes, scores, labels), drm(moved, boxes, scores, labels)
    assert torch.equal(a[labels == 1], b[labels == 1]) and a[1] != b[1]
    # the switch restores one relation over both classes
    drm.class_specific = False
    _, weights, _ = drm.embed_and_relate(features, boxes, scores, labels)
    assert torch.all(weights > 0)


def test_drm_bce_is_balanced_for_few_positives():
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert drm_positive_weight(labels, "balanced").item() == 3.0
    assert drm_positive_weight(torch.zeros(4), "balanced").item() == 1.0   # no positives
    assert drm_positive_weight(torch.ones(4), "balanced").item() == 1.0    # no negatives
    assert drm_positive_weight(labels, 2.5).item() == 2.5
    # an all-"duplicate" answer no longer nearly minimises the loss: one positive weighs three
    logits = torch.full((4,), -3.0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, pos_weight=drm_positive_weight(labels, "balanced"))
    expected = (3 * torch.nn.functional.softplus(torch.tensor(3.0))
                + 3 * torch.nn.functional.softplus(torch.tensor(-3.0))) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_duplicate_labels_hand_made_case():
    gt_boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    gt_labels = torch.tensor([1, 2])
    boxes = torch.tensor([[0, 0, 10, 9],      # on GT 0, IoU 0.9: duplicate of the next one
                          [0, 0, 10, 10],     # on GT 0, IoU 1: correct
                          [20, 20, 30, 30],   # on GT 1 but the wrong class: duplicate
                          [21, 21, 30, 30],   # on GT 1, IoU 0.81: correct
                          [40, 40, 50, 50]],  # on nothing
                         dtype=torch.float32)
    labels = torch.tensor([1, 1, 1, 2, 1])
    assert duplicate_labels(boxes, labels, gt_boxes, gt_labels).tolist() == [0, 1, 0, 1, 0]
    # the best box on a ground truth is still a duplicate when it misses the IoU threshold
    weak = torch.tensor([[0, 0, 10, 4.]])
    assert duplicate_labels(weak, torch.tensor([1]), gt_boxes, gt_labels).tolist() == [0]
    assert duplicate_labels(weak, torch.tensor([1]), gt_boxes, gt_labels, 0.3).tolist() == [1]
    assert duplicate_labels(boxes, labels, gt_boxes[:0], gt_labels[:0]).sum() == 0
    with pytest.raises(ValueError, match="labels"):
        duplicate_labels(boxes, labels[:2], gt_boxes, gt_labels)


# ----------------------------------------------------------------------------- model
def switch_combinations():
    """Every valid setting of the five switches (IRM's sub-switches only matter with IRM on)."""
    names = ("irm", "drm", "irm_deep_features", "irm_mask", "irm_relation")
    for irm, drm in itertools.product([False, True], repeat=2):
        inputs = itertools.product([False, True], repeat=3) if irm else [(True, True, True)]
        for df, msk, rl in inputs:
            if df or msk:
                yield dict(zip(names, (irm, drm, df, msk, rl)))


SWITCHES = list(switch_combinations())


def switch_id(s: dict) -> str:
    irm = "+".join(n for n, k in (("DF", "irm_deep_features"), ("MSK", "irm_mask"),
                                  ("RL", "irm_relation")) if s[k])
    return "-".join([f"irm[{irm}]"] * s["irm"] + ["drm"] * s["drm"]) or "maskrcnn"


@pytest.mark.parametrize("switches", SWITCHES, ids=switch_id)
def test_every_switch_combination_trains_and_predicts(batch, switches):
    model = build(**switches)
    losses = train_losses(model, batch)
    expected = BASE_LOSSES | {k for k in ("loss_irm", "loss_drm") if switches[k[5:]]}
    assert set(losses) == expected
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [q.grad for q in model.parameters() if q.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if switches["irm"] and switches["irm_relation"]:
        assert model.roi_heads.irm.gamma.grad is not None
    for out, image in zip(predict(model, batch[0]), batch[0]):
        n = len(out["boxes"])
        assert n > 0 and out["boxes"].shape == (n, 4) and out["labels"].dtype == torch.int64
        assert set(out["labels"].tolist()) <= {1, 2}
        assert out["scores"].shape == (n,) and torch.all((out["scores"] >= 0) & (out["scores"] <= 1))
        assert out["masks"].shape == (n, 1, *image.shape[-2:])
        assert out["masks"].min() >= 0 and out["masks"].max() <= 1


def test_both_modules_off_is_exactly_mask_rcnn(batch):
    model = build(irm=False, drm=False)
    torch.manual_seed(0)
    baseline = build_maskrcnn(18, 64, TINY["anchor_sizes"], fpn_channels=16, mask_head_channels=16,
                              box_head_dim=32, box_batch_size_per_image=32, rpn_post_nms_top_n_train=100)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  baseline.state_dict().values()))
    ours, theirs = train_losses(model, batch), train_losses(baseline, batch)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for a, b in zip(predict(model, batch[0]), predict(baseline, batch[0])):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores", "masks"))


def test_drm_trains_on_rpn_proposals_without_ground_truth_boxes(batch):
    """The DRM ranks the RPN's proposals at test; in training it must see the same kind of
    candidates, not the sampled RoIs with torchvision's appended ground-truth boxes."""
    model = build(irm=False)
    seen, rpn_out = {}, {}
    heads = model.roi_heads
    original = heads.drm_candidates

    def spy(class_logits, box_regression, proposals, image_shapes):
        seen["proposals"] = [p.clone() for p in proposals]
        out = original(class_logits, box_regression, proposals, image_shapes)
        seen["sources"] = [torch.cat(proposals)[c[3]] for c in out]
        return out

    heads.drm_candidates = spy
    def keep_rpn_output(module, inputs, output):
        rpn_out["p"] = [p.clone() for p in output[0]]

    model.rpn.register_forward_hook(keep_rpn_output)
    losses = train_losses(model, batch)
    assert torch.isfinite(losses["loss_drm"])
    _, targets = batch
    for props, rpn, t in zip(seen["proposals"], rpn_out["p"], targets):
        assert torch.equal(props, rpn)               # all RPN proposals, none added, none dropped
        is_gt = (props[:, None, :] == t["boxes"][None]).all(-1).any(1)
        assert not is_gt.any()
    for sources, t in zip(seen["sources"], targets):
        assert len(sources) > 0
        assert not (sources[:, None, :] == t["boxes"][None]).all(-1).any()


def test_alpha_beta_weight_only_their_losses(batch):
    plain = train_losses(build(), batch)
    weighted = train_losses(build(alpha=2.0, beta=3.0), batch)
    assert torch.equal(weighted["loss_drm"], 2.0 * plain["loss_drm"])
    assert torch.equal(weighted["loss_irm"], 3.0 * plain["loss_irm"])
    assert all(torch.equal(plain[k], weighted[k]) for k in BASE_LOSSES)


def test_training_is_deterministic(batch):
    runs = []
    for _ in range(2):
        model = build()
        losses = train_losses(model, batch)
        sum(losses.values()).backward()
        runs.append((losses, [q.grad.clone() for q in model.parameters() if q.grad is not None]))
    assert all(torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_eval_uses_irm_refined_masks(batch):
    model = build(drm=False)
    with torch.no_grad():
        model.roi_heads.irm.gamma.fill_(1.0)
    refined = predict(model, batch[0][:1])[0]
    model.roi_heads.irm = None  # the plain mask head on the same detections
    plain = predict(model, batch[0][:1])[0]
    assert torch.equal(refined["boxes"], plain["boxes"])
    assert not torch.allclose(refined["masks"], plain["masks"])


@pytest.mark.parametrize("bias, factor", [(0.0, 0.5), (30.0, 1.0)])
def test_eval_ranks_by_score_times_correct_probability(batch, bias, factor):
    """A DRM that says p(correct) = c everywhere scales the scores by c and keeps torchvision's NMS."""
    model = build(irm=False, drm_top_n=100_000)  # every candidate enters the DRM
    model.rpn._post_nms_top_n["testing"] = 50  # few proposals keep the n x n attention small
    with torch.no_grad():
        model.roi_heads.drm.classifier.weight.zero_()
        model.roi_heads.drm.classifier.bias.fill_(bias)
    with_drm = predict(model, batch[0][:1])[0]
    model.roi_heads.drm = None
    without = predict(model, batch[0][:1])[0]
    assert torch.equal(with_drm["boxes"], without["boxes"])
    assert torch.equal(with_drm["labels"], without["labels"])
    assert torch.equal(with_drm["scores"], without["scores"] * factor)


def test_params_are_validated(batch):
    assert irnet_options({}) == IRNET_DEFAULTS
    assert all(set(v) <= set(IRNET_DEFAULTS) for v in IRNET_ABLATIONS.values())
    with pytest.raises(ValueError, match="irm_deep_features, irm_mask"):
        build_irnet({**TINY, "irm_deep_features": False, "irm_mask": False})
    with pytest.raises(KeyError, match="drm_topk"):
        build_irnet({**TINY, "drm_topk": 4})
    # one reader of the Mask R-CNN keys for every detector: missing ones at their defaults
    default_head = build_irnet({k: v for k, v in TINY.items() if k != "box_head_dim"})
    assert default_head.roi_heads.box_head.fc7.out_features == MASKRCNN_DEFAULTS["box_head_dim"]
    with pytest.raises(ValueError, match="true or false"):
        irnet_options({"drm": "yes"})
    with pytest.raises(ValueError, match="drm_pos_weight"):
        irnet_options({"drm_pos_weight": "auto"})
    with pytest.raises(ValueError, match="drm_class_specific"):
        irnet_options({"drm_class_specific": 1})
    with pytest.raises(ValueError, match="divisible"):
        build_irnet({**TINY, "mask_head_channels": 24})
    with pytest.raises(ValueError, match="alpha"):
        build_irnet({**TINY, "alpha": -1.0})
    images, targets = batch
    bad = [dict(t, labels=t["labels"].to(torch.int32)) for t in targets]
    with pytest.raises(ValueError, match="int64"):
        build().train()(images, bad)

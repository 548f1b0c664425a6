import pytest
import torch

from overlapseg.models.donet import (ABLATIONS, DONET_DEFAULTS, DoNetRoIHeads, build_donet,
                                     consistency_loss, decomposition_targets, donet_options,
                                     merge_regions, mrp_attention_map, paste_mask_logits)
from overlapseg.models.maskrcnn import build_maskrcnn

SIZE = 64
TINY = {"depth": 18, "image_size": SIZE, "anchor_sizes": (8, 16, 32, 64, 128), "fpn_channels": 16,
        "mask_head_channels": 16, "box_head_dim": 32, "box_batch_size_per_image": 64,
        "rpn_post_nms_top_n_train": 200}
RPN_KEYS = {"loss_objectness", "loss_rpn_box_reg"}
TORCHVISION_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask"} | RPN_KEYS


def disc(cy: int, cx: int, r: int, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).to(torch.uint8)


def box_of(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def sample(shift: int = 0):
    """Three overlapping cells (label 1), each with a nucleus (label 2), on a grey image."""
    cells = [disc(28, 22 + shift, 12), disc(28, 40 + shift, 12), disc(42, 31 + shift, 12)]
    nuclei = [disc(28, 18 + shift, 4), disc(26, 44 + shift, 4), disc(46, 31 + shift, 4)]
    masks = torch.stack(cells + nuclei)
    labels = torch.tensor([1, 1, 1, 2, 2, 2])
    image = (0.9 - 0.15 * masks[:3].sum(0) - 0.3 * masks[3:].sum(0)).clamp(0, 1)
    target = {"boxes": torch.stack([box_of(m) for m in masks]), "labels": labels, "masks": masks}
    return image.expand(3, -1, -1).contiguous(), target


# ----------------------------------------------------------------------------- targets
def test_decomposition_targets_three_discs():
    # A and B overlap, B and C overlap, A and C do not; all three meet nowhere else.
    a, b, c = disc(20, 16, 10, 48), disc(20, 30, 10, 48), disc(20, 44, 8, 48)
    inter, comp = decomposition_targets(torch.stack([a, b, c]))
    assert inter.dtype == comp.dtype == torch.uint8
    ab, bc = a & b, b & c
    # by hand at single pixels: (row, col) -> (in A, in B, in C)
    assert (a[20, 10], b[20, 10], c[20, 10]) == (1, 0, 0)
    assert comp[0, 20, 10] == 1 and inter[0, 20, 10] == 0
    assert (a[20, 23], b[20, 23]) == (1, 1) and c[20, 23] == 0
    assert inter[0, 20, 23] == inter[1, 20, 23] == 1 and comp[0, 20, 23] == comp[1, 20, 23] == 0
    assert inter[2, 20, 23] == comp[2, 20, 23] == 0  # outside C
    assert (b[20, 38], c[20, 38]) == (1, 1) and inter[1, 20, 38] == inter[2, 20, 38] == 1
    assert a[20, 30] == 0 and comp[1, 20, 30] == 1  # B alone between its two overlaps
    # as sets: intersections are exactly the pairwise overlaps, complements the rest
    assert torch.equal(inter[0], ab) and torch.equal(inter[1], ab | bc) and torch.equal(inter[2], bc)
    assert torch.equal(comp[0], a - ab) and torch.equal(comp[1], b - (ab | bc))
    assert torch.equal(comp[2], c - bc)


def test_decomposition_targets_only_count_instances_of_the_same_class():
    cell, other_cell, nucleus = disc(20, 16, 10, 48), disc(20, 30, 10, 48), disc(20, 16, 3, 48)
    inter, comp = decomposition_targets(torch.stack([cell, other_cell, nucleus]), torch.tensor([1, 1, 2]))
    assert torch.equal(inter[0], cell & other_cell)  # its own nucleus does not make an overlap
    assert inter[2].sum() == 0 and torch.equal(comp[2], nucleus)
    empty = decomposition_targets(torch.zeros((0, 8, 8), dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    assert empty[0].shape == (0, 8, 8)


def test_merge_regions_is_the_binarised_exclusive_or():
    """The authors' Mergence Unit: sub-regions binarised at sigmoid > 0.5, then XOR."""
    big = torch.tensor([20.0, 0.3, -20.0, -0.1, 0.2])
    other = torch.tensor([20.0, -0.3, 0.4, -20.0, 0.0])
    assert torch.equal(merge_regions(big, other), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0]))
    empty = torch.zeros((0, 28, 28), requires_grad=True)
    assert consistency_loss(empty, empty, empty).item() == 0


def test_consistency_loss_value_on_a_known_target():
    # o > 0 xor m > 0 gives target [1, 0]; BCE(logit 0 -> 0.5, 1) = BCE(logit 0, 0) = log 2,
    # a soft XOR target (0.5 + 0.5 - 2 * 0.25 = 0.5 at logit 0) would give other values
    rec = torch.tensor([[0.0, 2.0]])
    o, m = torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 3.0]])
    expected = (torch.log(torch.tensor(2.0)) + torch.nn.functional.softplus(torch.tensor(2.0))) / 2
    assert consistency_loss(rec, o, m).item() == pytest.approx(expected.item(), rel=1e-6)


def test_consistency_weight_defaults_to_the_authors_value():
    # DeepDoNet/DoNet roi_heads.py: loss_triple_branch_consistency = BCE(...) * 0.00125
    assert DONET_DEFAULTS["lambda_cons"] == 0.00125
    assert donet_options({})["lambda_cons"] == 0.00125
    assert donet_options({"lambda_cons": 0.5})["lambda_cons"] == 0.5


def test_consistency_loss_trains_the_recombined_mask_only():
    rec, o, m = (torch.randn(2, 4, 4, requires_grad=True) for _ in range(3))
    consistency_loss(rec, o, m).backward()
    assert rec.grad.abs().sum() > 0 and o.grad is None and m.grad is None


# ----------------------------------------------------------------------------- MRP map
def test_paste_mask_logits_on_a_known_box():
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    logits = torch.tensor([[[a, b], [c, d]]])
    pasted = paste_mask_logits(logits, torch.tensor([[2.0, 3.0, 6.0, 7.0]]), (10, 10))
    assert pasted.shape == (1, 10, 10)
    # 2 mask cells over 4 pixels: pixel centres sit at 1/4 and 3/4 of a cell, edges clamp
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    expected = torch.zeros(10, 10)
    expected[3:7, 2:6] = w @ logits[0] @ w.T
    assert torch.allclose(pasted[0], expected, atol=1e-6)
    assert pasted[0, 3, 3].item() == pytest.approx(0.75 * a + 0.25 * b)
    # at stride 2 the box is x 1..3, y 1.5..3.5: centres x 1.5, 2.5 and y 1.5, 2.5 (half-open)
    half = paste_mask_logits(torch.full((1, 7, 7), 4.0), torch.tensor([[2.0, 3.0, 6.0, 7.0]]), (5, 5), 0.5)
    inside = torch.zeros(5, 5, dtype=torch.bool)
    inside[1:3, 1:3] = True
    assert torch.equal(half[0] != 0, inside) and torch.all(half[0][inside] == 4.0)


def test_mrp_attention_map_sums_positive_logits():
    logits = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), 1.0), torch.full((4, 4), -9.0)])
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 8.0, 8.0]])
    attention = mrp_attention_map(logits, boxes, (8, 8))
    assert attention[0, 0].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert attention[3, 3].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert attention[7, 7].item() == pytest.approx(0.5)  # negative evidence does not darken
    assert torch.all(mrp_attention_map(logits[:0], boxes[:0], (8, 8)) == 0.5)
    logits.requires_grad_(True)
    mrp_attention_map(logits, boxes, (8, 8)).sum().backward()
    assert logits.grad[0].abs().sum() > 0


# ----------------------------------------------------------------------------- model
def build(switches: dict, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_donet({**TINY, **switches, **extra})


def train_step(model, seed: int = 0):
    model.train()
    images, targets = zip(*(sample(0), sample(4)))
    torch.manual_seed(seed)
    losses = model(list(images), list(targets))
    sum(losses.values()).backward()
    return losses


@pytest.fixture(scope="module")
def ablation_losses():
    return {name: train_step(build(switches)) for name, switches in ABLATIONS.items()}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_row_trains_and_predicts(name, ablation_losses):
    losses = ablation_losses[name]
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    model = build(ABLATIONS[name]).eval()
    image = sample(2)[0][:, :, :60]  # a non-square size comes back at its own size
    with torch.no_grad():
        out = model([image])
    assert isinstance(out, list) and len(out) == 1
    det = out[0]
    assert set(det) == {"boxes", "labels", "scores", "masks"}
    n = len(det["boxes"])
    assert n > 0 and det["boxes"].shape == (n, 4) and det["scores"].shape == (n,)
    assert det["labels"].dtype == torch.int64 and set(det["labels"].tolist()) <= {1, 2}
    assert det["masks"].shape == (n, 1, SIZE, 60)
    assert det["masks"].min() >= 0 and det["masks"].max() <= 1


def test_each_switch_adds_exactly_its_loss_terms(ablation_losses):
    keys = {name: set(losses) for name, losses in ablation_losses.items()}
    assert keys["maskrcnn"] == TORCHVISION_KEYS
    assert keys["h_o"] - keys["maskrcnn"] == {"loss_intersection"} and keys["maskrcnn"] <= keys["h_o"]
    assert keys["drm"] - keys["h_o"] == {"loss_complement"} and keys["h_o"] <= keys["drm"]
    assert keys["drm_fu"] - keys["drm"] == {"loss_recombined"} and keys["drm"] <= keys["drm_fu"]
    assert keys["drm_crm"] - keys["drm_fu"] == {"loss_consistency"} and keys["drm_fu"] <= keys["drm_crm"]
    assert keys["donet"] == keys["drm_crm"] | {f"{k}_nucleus" for k in keys["drm_crm"]}
    # DRM without its complement head, and MRP on plain Mask R-CNN heads
    assert set(train_step(build({**ABLATIONS["drm"], "drm_intersection": False}))) == \
        TORCHVISION_KEYS | {"loss_complement"}
    assert set(train_step(build({**ABLATIONS["maskrcnn"], "mrp": True}))) == \
        TORCHVISION_KEYS | {f"{k}_nucleus" for k in TORCHVISION_KEYS}


def test_lambdas_scale_only_their_terms():
    full = ABLATIONS["drm_crm"]
    base = train_step(build(full, lambda_cons=1.0))
    scaled = train_step(build(full, lambda_dec=2.0, lambda_rmask=3.0, lambda_cons=0.5))
    factor = {"loss_intersection": 2.0, "loss_complement": 2.0, "loss_recombined": 3.0,
              "loss_consistency": 0.5}
    for k, v in base.items():
        assert scaled[k].item() == pytest.approx(factor.get(k, 1.0) * v.item(), rel=1e-4), k


def test_all_switches_off_is_plain_maskrcnn():
    reference = build_maskrcnn(**TINY)  # the two detector kwargs pass through to MaskRCNN
    model = build(ABLATIONS["maskrcnn"])
    assert model.state_dict().keys() == reference.state_dict().keys()
    model.load_state_dict(reference.state_dict())
    ours, theirs = train_step(model), train_step(reference)
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert torch.allclose(ours[k], theirs[k]), k
    image = sample(2)[0]
    with torch.no_grad():
        a, b = model.eval()([image])[0], reference.eval()([image])[0]
    assert all(torch.allclose(a[k], b[k]) for k in b)


def test_inference_uses_the_recombined_mask():
    model = build(ABLATIONS["drm_crm"]).eval()
    heads: DoNetRoIHeads = model.roi_heads
    torch.nn.init.normal_(heads.fusion.residual[2].weight, std=0.5)  # make e^r differ from e^c
    calls = []
    heads.mask_predictor.register_forward_hook(lambda mod, inp, out: calls.append(out))
    features = model.backbone(torch.rand(1, 3, SIZE, SIZE))
    proposals = [torch.tensor([[4.0, 4.0, 40.0, 40.0], [20.0, 10.0, 60.0, 50.0]])]
    with torch.no_grad():
        detections, _ = heads(features, proposals, [(SIZE, SIZE)])
    coarse, recombined = calls  # H_i's predictor runs twice: coarse, then recombined
    det = detections[0]
    picked = recombined[torch.arange(len(det["labels"])), det["labels"]][:, None].sigmoid()
    assert len(det["labels"]) > 0 and torch.allclose(det["masks"], picked)
    assert not torch.allclose(coarse, recombined)


def test_untrained_fusion_starts_from_the_coarse_mask(ablation_losses):
    losses = ablation_losses["drm_fu"]
    assert losses["loss_recombined"].item() == pytest.approx(losses["loss_mask"].item())


def test_mrp_reweighting_feeds_the_nucleus_stage():
    model = build(ABLATIONS["donet"]).train()
    images, targets = zip(*(sample(0), sample(4)))
    # nucleus losses reach the cytoplasm mask head through the map M (Sec. 3.3)
    model(list(images), list(targets))["loss_objectness_nucleus"].backward()
    assert model.roi_heads.mask_head[0][0].weight.grad.abs().sum() > 0
    assert model.nucleus_rpn is not model.rpn and model.nucleus_roi_heads is not model.roi_heads


def test_invalid_params_are_rejected():
    with pytest.raises(ValueError, match="crm_fusion"):
        build({**ABLATIONS["maskrcnn"], "crm_fusion": True})
    with pytest.raises(ValueError, match="crm_consistency"):
        build({**ABLATIONS["drm"], "crm_consistency": True})
    with pytest.raises(ValueError, match="'mrp' must be true or false"):
        donet_options({"mrp": "yes"})
    with pytest.raises(KeyError, match="drm_chanels"):
        donet_options({"drm_chanels": 8})
    assert donet_options({"iterations": 3, "lr": 0.1}) == DONET_DEFAULTS  # loop keys pass by


def test_defaults_are_the_full_model():
    assert {k: DONET_DEFAULTS[k] for k in ABLATIONS["donet"]} == ABLATIONS["donet"]
    model = build({})
    assert model.nucleus_roi_heads is not None and model.roi_heads.fusion is not None
    drm = model.roi_heads.intersection_head.convs[0][0]
    assert drm.in_channels == TINY["fpn_channels"] + TINY["mask_head_channels"]
    assert drm.out_channels == TINY["mask_head_channels"]
    assert build({"drm_channels": 8}).roi_heads.complement_head.convs[0][0].out_channels == 8


def test_frozen_bn_build_for_pretrained_weights():
    model = build_donet({**TINY, **ABLATIONS["drm"]}, frozen_bn=True)
    assert model.nucleus_rpn is None
    assert any(type(m).__name__ == "FrozenBatchNorm2d" for m in model.backbone.body.modules())
    assert model.transform.image_std == [0.229, 0.224, 0.225]

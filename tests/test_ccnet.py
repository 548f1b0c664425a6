import math

import pytest
import torch
import torchvision

from overlapseg.models import cc_keypoints as kp
from overlapseg.models.ccnet import (CC_DEFAULTS, LOSS_NAMES, CoordinateAttention, boundary_targets,
                                     build_ccnet, jitter_boxes, keypoint_levels, mask_boxes,
                                     penalty_reduced_focal_loss)

torch.set_num_threads(1)

TINY = {"image_size": 96, "width": 16, "kd_channels": 8, "mask_channels": 16, "roi_size": 7,
        "max_keypoints": 60}
# overlapping cytoplasm boxes, one on the image border, nuclei centred in their cells
BOXES = torch.tensor([[0., 0, 30, 26], [20, 14, 61, 50], [33, 20, 48, 33], [5, 40, 25, 64],
                      [10, 8, 22, 20]])
LABELS = torch.tensor([1, 1, 2, 1, 2])


def test_keypoint_targets_positions_offsets_displacements():
    box = torch.tensor([[14., 10, 35, 27]])  # corners on pixels (14, 10) and (34, 26), centre (24, 18)
    t = kp.keypoint_targets(box, torch.tensor([2]), 2, (10, 12), stride=4, radius=2)
    assert t["heatmap"].shape == (2, 5, 10, 12) and t["displacement"].shape == (2, 20, 2, 10, 12)
    assert t["heatmap"][0].sum() == 0 and t["offset"][0].abs().sum() == 0  # class 1 empty
    exact = torch.tensor([[14, 10], [34, 10], [14, 26], [34, 26], [24, 18]]) / 4
    for k in range(5):
        disc = t["heatmap"][1, k]
        cx, cy = exact[k].floor().long().tolist()
        yy, xx = torch.nonzero(disc, as_tuple=True)
        assert len(yy) == 13 and disc[cy, cx] == 1  # lattice disc of radius 2 around floor(y/n)
        assert ((xx - cx) ** 2 + (yy - cy) ** 2).max() <= 4
        # Eq. 1 at the disc centre: the sub-pixel remainder y/n - floor(y/n)
        assert torch.allclose(t["offset"][1, k, :, cy, cx], exact[k] - exact[k].floor())
        # every disc cell points at the keypoint; zero elsewhere
        assert torch.allclose(t["offset"][1, k, 0, yy, xx], exact[k, 0] - xx)
        assert torch.allclose(t["offset"][1, k, 1, yy, xx], exact[k, 1] - yy)
        assert t["offset"][1, k][:, disc == 0].abs().sum() == 0
        for l in range(5):
            if l == k:
                continue
            d = t["displacement"][1, kp.PAIR_INDEX[(k, l)]]  # Eq. 3: y_l - x on the disc of k
            assert torch.allclose(d[0, yy, xx], exact[l, 0] - xx)
            assert torch.allclose(d[1, yy, xx], exact[l, 1] - yy)
            assert d[:, disc == 0].abs().sum() == 0


def test_overlapping_discs_belong_to_the_nearest_keypoint():
    boxes = torch.tensor([[8., 8, 30, 30], [12., 8, 40, 40]])  # top-left corners 1 cell apart
    t = kp.keypoint_targets(boxes, torch.tensor([1, 1]), 1, (12, 12), stride=4, radius=2)
    off = t["offset"][0, 0]
    assert torch.allclose(off[:, 2, 1], torch.tensor([1.0, 0.0]))  # cell (1, 2) -> keypoint (2, 2)
    assert torch.allclose(off[:, 2, 4], torch.tensor([-1.0, 0.0]))  # cell (4, 2) -> keypoint (3, 2)
    assert torch.allclose(off[:, 2, 2], torch.zeros(2))  # on the first keypoint itself


def test_keypoints_to_boxes_needs_a_diagonal_or_three_points():
    pts = kp.box_keypoints(torch.tensor([[4., 6, 21, 15]])).expand(6, 5, 2)
    present = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0], [1, 0, 0, 0, 1], [1, 1, 0, 0, 1],
                            [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], dtype=torch.bool)
    boxes, valid = kp.keypoints_to_boxes(pts, present)
    assert valid.tolist() == [True, True, True, True, False, False]  # same-side pairs fail
    assert torch.allclose(boxes[valid], torch.tensor([4., 6, 21, 15]).expand(4, 4))


@pytest.mark.parametrize("stride", [4, 8])
def test_grouping_recovers_boxes_exactly_from_target_maps(stride):
    t = kp.keypoint_targets(BOXES, LABELS, 2, (64 // stride, 64 // stride), stride, radius=2)
    boxes, scores, labels = kp.decode_boxes(t["heatmap"], t["offset"], t["displacement"], stride,
                                            radius=2, threshold=0.3, tolerance=1.0, max_keypoints=300)
    keep = kp.diou_nms(boxes, scores, labels, 0.5)
    got = sorted(zip(boxes[keep].tolist(), labels[keep].tolist()))
    want = sorted(zip(BOXES.tolist(), LABELS.tolist()))
    assert [lab for _, lab in got] == [lab for _, lab in want]
    assert torch.allclose(torch.tensor([b for b, _ in got]), torch.tensor([b for b, _ in want]), atol=1e-4)
    assert ((scores > 0) & (scores <= 1)).all()


def test_hough_votes_of_a_full_disc_sum_to_about_one():
    t = kp.keypoint_targets(torch.tensor([[9., 13, 40, 50]]), torch.tensor([1]), 1, (16, 16), 4, 2)
    score, position = kp.hough_score_map(t["heatmap"][0], t["offset"][0], 2)
    best = score[0].flatten().argmax()
    assert score[0].max() == pytest.approx(13 / (math.pi * 4), rel=1e-5)  # 13 lattice cells / pi r^2
    assert torch.allclose(position[0, :, best // score.shape[2], best % score.shape[2]],
                          torch.tensor([9 / 4, 13 / 4]), atol=1e-5)


def test_diou_nms_keeps_the_right_boxes():
    boxes = torch.tensor([[0., 0, 10, 10],  # best
                          [0.5, 0.5, 10.5, 10.5],  # near duplicate: dropped
                          [3.3, 0, 13.3, 10],  # IoU 0.504 but centres apart: DIoU 0.46, kept
                          [0, 0, 10, 10],  # same box, other class: kept
                          [30, 30, 40, 40]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = torch.tensor([1, 1, 1, 2, 1])
    assert kp.diou_nms(boxes, scores, labels, 0.5).tolist() == [0, 2, 3, 4]
    plain = torchvision.ops.batched_nms(boxes, scores, labels, 0.5)
    assert 2 not in plain.tolist()  # plain IoU-NMS would have dropped it
    with pytest.raises(ValueError, match="threshold"):
        kp.diou_nms(boxes, scores, labels, 1.5)


def test_coordinate_attention_shapes():
    torch.manual_seed(0)
    ca = CoordinateAttention(16, reduction=4)
    x = torch.randn(2, 16, 5, 7)
    rows, cols = ca.weights(x)
    assert rows.shape == (2, 16, 5, 1) and cols.shape == (2, 16, 1, 7)
    assert ((rows > 0) & (rows < 1)).all() and ((cols > 0) & (cols < 1)).all()
    out = ca(x)
    assert out.shape == x.shape and torch.allclose(out, x * rows * cols)


def test_boundary_target_is_the_inner_contour():
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:6, 1:8] = 1  # touches the RoI's right edge
    ring = boundary_targets(mask, 1)[0]
    inner = torch.zeros(8, 8)
    inner[3:5, 2:7] = 1
    assert torch.equal(ring, mask[0] - inner)


def _sample(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    boxes = torch.tensor([[10., 5, 50, 40], [30, 20, 80, 62], [20, 15, 32, 25], [48, 32, 60, 44]])
    masks = torch.zeros(4, h, w, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        m[y0:y1, x0:x1] = 1
    return image, {"boxes": boxes, "labels": torch.tensor([1, 1, 2, 2]), "masks": masks}


def _batch():
    images, targets = zip(*[_sample(66, 90, 0), _sample(66, 90, 1)])  # not multiples of 32
    return list(images), list(targets)


def _grads(module):
    return [p.grad for p in module.parameters()]


def test_boundary_branch_frozen_in_first_half():
    torch.manual_seed(0)
    model = build_ccnet(TINY).train()
    images, targets = _batch()
    for progress, active in ((0.2, False), (0.6, True)):
        model.zero_grad(set_to_none=True)
        model.set_progress(progress)
        losses = model(images, targets)
        sum(losses.values()).backward()
        boundary = _grads(model.cacs.boundary_branch)
        if active:
            assert losses["loss_boundary"] > 0
            assert all(g is not None and g.abs().sum() > 0 for g in boundary)
        else:
            assert losses["loss_boundary"] == 0
            assert all(g is None or g.abs().sum() == 0 for g in boundary)
        assert all(g is not None for g in _grads(model.cacs.mask_branch))
    with pytest.raises(ValueError, match="progress"):
        model.set_progress(1.5)


@pytest.mark.parametrize("cac", [True, False])
def test_train_step_and_predict(cac):
    torch.manual_seed(0)
    model = build_ccnet({**TINY, "cac": cac, "lr": 1.0})  # trainer keys are ignored
    assert (model.cacs.attention is not None) == cac and (model.cacs.boundary_branch is not None) == cac
    images, targets = _batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    model.set_progress(0.75)
    losses = model(images, targets)
    assert set(losses) == set(LOSS_NAMES) and all(torch.isfinite(v) for v in losses.values())
    assert (losses["loss_boundary"] > 0) == cac
    sum(losses.values()).backward()
    optimizer.step()
    model.eval()
    # untrained maps: keep every peak and link loosely, to exercise the whole path
    model.kd.heatmap_threshold, model.kd.group_tolerance = 0.0, 1e3
    with torch.no_grad():
        out = model([images[0], images[1][:, :50, :70]])
    # images keep their own pixel scale (no resize to image_size); an untrained network may find
    # nothing in the small crop, so the whole path must run on at least one of the two
    assert sum(len(o["boxes"]) for o in out) > 0
    for o, (h, w) in zip(out, [(66, 90), (50, 70)]):
        n = len(o["boxes"])
        assert 0 <= n <= CC_DEFAULTS["detections_per_image"]
        assert o["masks"].shape == (n, 1, h, w) and o["scores"].shape == o["labels"].shape == (n,)
        assert ((o["masks"] >= 0) & (o["masks"] <= 1)).all()
        assert set(o["labels"].tolist()) <= {1, 2} and ((o["scores"] >= 0) & (o["scores"] <= 1)).all()
        assert (o["boxes"][:, 2:] <= torch.tensor([w, h])).all() and (o["boxes"] >= 0).all()


def test_detector_recovers_boxes_from_perfect_maps_after_resize():
    """The KD path of the model (decoding, clipping, NMS) on exact maps fed as logits."""
    model = build_ccnet({**TINY, "kd_strides": [4]}).eval()
    t = kp.keypoint_targets(BOXES, LABELS, 2, (16, 16), 4, 2)
    maps = {"heatmap": (t["heatmap"] * 2 - 1) * 30, "offset": t["offset"], "displacement": t["displacement"]}
    det = model.kd.detect(maps, (64, 64))
    order = det["boxes"][:, 0].argsort()
    assert torch.allclose(det["boxes"][order], BOXES[BOXES[:, 0].argsort()], atol=1e-4)
    assert det["labels"][order].tolist() == LABELS[BOXES[:, 0].argsort()].tolist()


def test_keypoint_levels_read_the_maps_at_the_ground_truth(monkeypatch):
    """cc-levels diagnostics: exact target maps give peaks ~1, full-disc votes ~1 and nothing
    far from the keypoints; cytoplasm corners switched off read 0 while their centres stay."""
    model = build_ccnet({**TINY, "kd_strides": [4]})
    t = kp.keypoint_targets(BOXES, LABELS, 2, (16, 16), 4, 2)
    heat = t["heatmap"].clone()
    heat[0, :4] = 0  # no cytoplasm corner fires: the short-budget failure cc-levels shows
    maps = {"heatmap": ((heat * 2 - 1) * 30)[None], "offset": t["offset"][None],
            "displacement": t["displacement"][None]}
    monkeypatch.setattr(model.kd, "maps", lambda features: [maps])
    levels = keypoint_levels(model, torch.zeros(3, 64, 64), {"boxes": BOXES, "labels": LABELS})
    cyto, nuc = levels["cytoplasm"], levels["nucleus"]
    assert len(cyto["corner"]["peak"]) == 4 * 3 and len(cyto["centre"]["peak"]) == 3
    assert len(nuc["corner"]["vote"]) == 4 * 2
    assert max(cyto["corner"]["peak"]) < 1e-6 and max(cyto["corner"]["vote"]) < 1e-6
    assert min(cyto["centre"]["peak"]) > 0.99 and min(nuc["corner"]["peak"]) > 0.99
    # a keypoint's full disc of certain, exact votes scores about 1 (hough_score_map); the image
    # border cuts the discs of some corners, so the median is the robust check
    votes = sorted(nuc["corner"]["vote"] + nuc["centre"]["vote"])
    assert 0.8 < votes[len(votes) // 2] < 1.2
    assert cyto["background"] < 1e-6 and nuc["background"] < 1e-6
    assert model.training  # restored


def test_training_is_bitwise_deterministic_and_learns():
    def run():
        torch.manual_seed(3)
        model = build_ccnet(TINY).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        images, targets = _batch()
        history = []
        for it in range(4):
            model.set_progress(it / 4)
            losses = model(images, targets)
            loss = sum(losses.values()) - losses["loss_boundary"]  # the part present at every step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        return history, model.state_dict()

    first, state = run()
    second, state2 = run()
    assert first == second and all(torch.equal(state[k], state2[k]) for k in state)
    assert first[-1] < first[0]


def test_frozen_bn_build_for_pretrained_weights():
    model = build_ccnet(TINY, frozen_bn=True)
    assert any(type(m).__name__ == "FrozenBatchNorm2d" for m in model.backbone.body.modules())
    assert not any(type(m).__name__ == "GroupNorm" for m in model.backbone.body.modules())
    assert model.transform.image_mean == [0.485, 0.456, 0.406]


def test_bad_inputs_raise_value_errors():
    model = build_ccnet(TINY)
    images, targets = _batch()
    with pytest.raises(ValueError, match="depth"):
        build_ccnet({"depth": 19})
    with pytest.raises(ValueError, match="kd_strides"):
        build_ccnet({**TINY, "kd_strides": [2]})
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        model.eval()([images[0][:1]])
    model.train()
    with pytest.raises(ValueError, match="one target dict per image"):
        model(images)
    with pytest.raises(ValueError, match="labels"):
        model(images, [{**targets[0], "labels": torch.tensor([1, 3, 1, 1])}, targets[1]])
    with pytest.raises(ValueError, match="lacks"):
        model(images, [{"boxes": targets[0]["boxes"]}, targets[1]])


def _lone_keypoint_maps(keep_type: int):
    """Target maps of BOXES with every heatmap channel but ``keep_type`` cleared."""
    t = kp.keypoint_targets(BOXES, LABELS, 2, (16, 16), 4, radius=2)
    heat = torch.zeros_like(t["heatmap"])
    heat[:, keep_type] = t["heatmap"][:, keep_type]
    return heat, t["offset"], t["displacement"]


@pytest.mark.parametrize("keep_type", [4, 0])  # a lone centre, a lone top-left corner
def test_lone_keypoints_are_boxed_from_their_displacements_only_when_completing(keep_type):
    heat, offset, displacement = _lone_keypoint_maps(keep_type)
    strict = kp.decode_boxes(heat, offset, displacement, 4, 2, 0.3, 1.0, 300, complete=False)
    assert len(strict[0]) == 0  # the paper's 2-5 rule: one keypoint is no box
    boxes, scores, labels = kp.decode_boxes(heat, offset, displacement, 4, 2, 0.3, 1.0, 300,
                                            complete=True)
    keep = kp.diou_nms(boxes, scores, labels, 0.5)
    got = sorted(zip(boxes[keep].tolist(), labels[keep].tolist()))
    want = sorted(zip(BOXES.tolist(), LABELS.tolist()))
    assert [lab for _, lab in got] == [lab for _, lab in want]
    assert torch.allclose(torch.tensor([b for b, _ in got]), torch.tensor([b for b, _ in want]), atol=1e-4)
    # one of five keypoints supported (its vote clipped to 1): at most a fifth of a full box's
    # score, less where the image border cuts the keypoint's disc (the corner of box 0)
    assert ((scores[keep] > 0) & (scores[keep] <= 0.2 + 1e-6)).all()
    if keep_type == 4:  # centres lie inside the image: full discs
        assert torch.allclose(scores[keep], torch.full((len(keep),), 0.2), atol=1e-5)


def test_completion_leaves_boxes_the_strict_rule_forms_unchanged():
    t = kp.keypoint_targets(BOXES, LABELS, 2, (16, 16), 4, radius=2)
    args = (t["heatmap"], t["offset"], t["displacement"], 4, 2, 0.3, 1.0, 300)
    for a, b in zip(kp.decode_boxes(*args, complete=False), kp.decode_boxes(*args, complete=True)):
        assert torch.equal(a, b)


def test_complete_groups_averages_the_members_predictions():
    xy = torch.tensor([[1.0, 1.0], [9.0, 9.0]])
    partners = torch.full((2, 5, 2), math.nan)
    partners[0, 4] = torch.tensor([5.0, 5.0])  # keypoint 0 (top-left) says the centre is at (5, 5)
    partners[1, 4] = torch.tensor([5.0, 7.0])  # keypoint 1 (bottom-right) says (5, 7)
    groups = torch.tensor([[0, -1, -1, 1, -1]])
    points, known = kp.complete_groups(groups, partners, xy, groups >= 0)
    assert known.tolist() == [[True, False, False, True, True]]
    assert torch.allclose(points[0, 4], torch.tensor([5.0, 6.0]))
    assert torch.equal(points[0, [0, 3]], xy)


def test_decoding_keys_are_inference_only(tmp_path):
    """Thresholds and box completion re-decode a trained model: no retraining, no new fingerprint."""
    from overlapseg.train.base import MODEL_FORMAT, get_trainer

    klass = get_trainer("ccnet")
    assert {"heatmap_threshold", "complete_boxes", "score_threshold"} <= set(klass.INFERENCE_KEYS)
    assert klass.DEFAULTS["score_threshold"] == 0.0 and klass.DEFAULTS["complete_boxes"] is True
    base = klass(klass.SMOKE_PARAMS)
    redecoded = klass({**klass.SMOKE_PARAMS, "heatmap_threshold": 0.5, "complete_boxes": False})
    retrained = klass({**klass.SMOKE_PARAMS, "radius": 3})
    assert base.fingerprint() == redecoded.fingerprint() != retrained.fingerprint()
    model = redecoded.build_model()
    assert model.kd.heatmap_threshold == 0.5 and model.kd.complete_boxes is False
    torch.save({"format": MODEL_FORMAT, "trainer": "ccnet", "params": base.params, "seed": 0,
                "state_dict": base.build_model().state_dict()}, tmp_path / "model.pt")
    _, loaded = klass.load(tmp_path, params={"complete_boxes": False, "radius": 9})
    assert loaded.kd.complete_boxes is False and loaded.kd.radius == base.params["radius"]


def test_mask_boxes_are_the_tight_boxes_of_the_roi_masks():
    masks = torch.zeros(2, 4, 4)
    masks[0, 1:3, 0:2] = 0.9  # rows 1-2, columns 0-1 of a 4x4 grid over a 40 px box
    boxes = torch.tensor([[0.0, 0, 40, 40], [5, 5, 9, 9]])
    out = mask_boxes(masks, boxes)
    assert torch.allclose(out[0], torch.tensor([0.0, 10, 20, 30]))
    assert torch.equal(out[1], boxes[1])  # empty mask: box kept


def test_box_expansion_and_mask_refits_apply_per_class():
    torch.manual_seed(0)
    model = build_ccnet({**TINY, "box_expand": [1.5, 1.0], "mask_refits": [1, 0]}).eval()
    feats = {str(i): torch.randn(1, TINY["width"], 16 // 2 ** i, 16 // 2 ** i) for i in range(4)}
    torch.nn.init.constant_(model.cacs.mask_branch[-1].bias, 5.0)  # every mask cell on
    boxes = torch.tensor([[20.0, 20, 40, 40], [22, 22, 30, 30], [50, 2, 62, 12]])
    segmented, masks = [], model.cacs.masks
    model.cacs.masks = lambda f, b, lab: segmented.append(lab[0].tolist()) or masks(f, b, lab)
    out, _ = model.cacs(feats, [{"boxes": boxes, "labels": torch.tensor([1, 2, 1]), "scores": torch.ones(3)}],
                        [(64, 64)])
    # cytoplasm: expanded by 1.5 about the centre (clipped to the 64 px image), then refit to its
    # (full) mask, i.e. the expanded box; the nucleus keeps its box
    assert torch.allclose(out[0]["boxes"], torch.tensor([[15.0, 15, 45, 45], [22, 22, 30, 30], [47, 0, 64, 14.5]]))
    assert out[0]["masks"].shape == (3, 1, 2 * TINY["roi_size"], 2 * TINY["roi_size"])
    assert segmented == [[1, 2, 1], [1, 1]]  # every box once, then the cytoplasm boxes again
    # no image, or no box: empty outputs of the right shapes
    empty, _ = model.cacs(feats, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                                   "scores": torch.zeros(0)}], [(64, 64)])
    assert empty[0]["boxes"].shape == (0, 4) and empty[0]["masks"].shape[0] == 0
    with pytest.raises(ValueError, match="box_expand"):
        build_ccnet({**TINY, "box_expand": [1.2, 1.0, 1.0]})
    with pytest.raises(ValueError, match="box_expand"):
        build_ccnet({**TINY, "box_expand": 0.5})


# ----------------------------------------------------------------------------- focal loss, jitter
def test_focal_loss_on_a_known_map():
    """CornerNet's loss by hand: p = (0.5, 0.5, 0.25), one positive, g = (1, 0.5, 0)."""
    logits = torch.tensor([0.0, 0.0, math.log(1 / 3)])
    target = torch.tensor([1.0, 0.0, 0.0])
    gaussian = torch.tensor([1.0, 0.5, 0.0])
    positive = 0.5 ** 2 * math.log(2)                     # (1 - p)^2 (-log p)
    near = (1 - 0.5) ** 4 * 0.5 ** 2 * math.log(2)        # (1 - g)^4 p^2 (-log(1 - p))
    far = 1.0 * 0.25 ** 2 * -math.log(0.75)
    expected = (positive + near + far) / 1                # one positive
    assert penalty_reduced_focal_loss(logits, target, gaussian).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.2021, abs=1e-4)
    # two positives halve the sum's normaliser; no positive divides by 1
    two = penalty_reduced_focal_loss(logits, torch.tensor([1.0, 1.0, 0.0]), gaussian)
    assert two.item() == pytest.approx((2 * positive + far) / 2, rel=1e-6)
    assert penalty_reduced_focal_loss(logits, torch.zeros(3), torch.zeros(3)).item() == \
        pytest.approx(2 * 0.25 * math.log(2) + far, rel=1e-6)


def test_gaussian_target_peaks_at_the_keypoint():
    t = kp.keypoint_targets(torch.tensor([[8., 8, 25, 25]]), torch.tensor([1]), 1, (8, 8), 4, radius=2)
    g = t["gaussian"][0, 0]                       # top-left keypoint at (8, 8) px = cell (2, 2)
    assert g[2, 2] == 1.0 and g.max() == 1.0
    assert g[2, 5].item() == pytest.approx(math.exp(-9 / 8), rel=1e-6)   # 3 cells away, sigma 2
    assert torch.all((t["heatmap"] == 1) <= (t["gaussian"] > 0.3))


def test_heatmap_loss_choice():
    torch.manual_seed(0)
    images, targets = _batch()
    focal = build_ccnet(TINY).train()(images, targets)["loss_heatmap"]
    torch.manual_seed(0)
    bce = build_ccnet({**TINY, "heatmap_loss": "bce"}).train()(images, targets)["loss_heatmap"]
    assert CC_DEFAULTS["heatmap_loss"] == "focal"
    assert focal.item() != pytest.approx(bce.item(), rel=1e-3)
    with pytest.raises(ValueError, match="heatmap_loss"):
        build_ccnet({**TINY, "heatmap_loss": "mse"})


def test_jitter_stays_within_its_bounds():
    boxes = torch.tensor([[100.0, 100, 140, 160]]).repeat(500, 1)
    torch.manual_seed(0)
    out = jitter_boxes(boxes, (-0.21, 0.17), 0.17)
    size, new_size = boxes[:, 2:] - boxes[:, :2], out[:, 2:] - out[:, :2]
    ratio = new_size / size
    assert ratio.min() >= 0.79 - 1e-6 and ratio.max() <= 1.17 + 1e-6
    assert ratio.min() < 0.82 and ratio.max() > 1.14                 # the whole range is used
    shift = ((out[:, 2:] + out[:, :2]) - (boxes[:, 2:] + boxes[:, :2])) / 2 / size
    assert shift.abs().max() <= 0.17 + 1e-6 and shift.abs().max() > 0.15
    torch.manual_seed(0)
    assert torch.equal(jitter_boxes(boxes, (-0.21, 0.17), 0.17), out)    # seeded: reproducible
    assert torch.equal(jitter_boxes(boxes, (0.0, 0.0), 0.0), boxes)
    clipped = jitter_boxes(torch.tensor([[0.0, 0, 30, 20]]).repeat(50, 1), (0.0, 0.17), 0.17, (20, 30))
    assert clipped[:, :2].min() >= 0 and clipped[:, 2].max() <= 30 and clipped[:, 3].max() <= 20
    with pytest.raises(ValueError, match="jitter"):
        jitter_boxes(boxes, (0.2, -0.2), 0.1)


def test_cacs_trains_on_jittered_ground_truth_boxes():
    """The boxes CACS crops in training are the ground-truth boxes moved within the jitter."""
    torch.manual_seed(0)
    model = build_ccnet(TINY).train()
    images, targets = _batch()
    seen = []
    original = model.cacs.roi_features
    model.cacs.roi_features = lambda features, boxes: (seen.append([b.clone() for b in boxes]),
                                                       original(features, boxes))[1]
    model(images, targets)
    (boxes,) = seen
    for got, t in zip(boxes, targets):
        gt = t["boxes"]
        assert not torch.equal(got, gt)
        size = gt[:, 2:] - gt[:, :2]
        ratio = (got[:, 2:] - got[:, :2]) / size
        shift = ((got[:, 2:] + got[:, :2]) - (gt[:, 2:] + gt[:, :2])) / 2 / size
        clipped = (got[:, 0] == 0) | (got[:, 1] == 0) | (got[:, 2] == 90) | (got[:, 3] == 66)
        ok = ~clipped
        assert ok.sum() >= 2
        assert ratio[ok].min() >= 0.79 - 1e-5 and ratio[ok].max() <= 1.17 + 1e-5
        assert shift[ok].abs().max() <= 0.17 + 1e-5
    seen.clear()
    torch.manual_seed(0)
    exact = build_ccnet({**TINY, "cacs_jitter_scale": [0, 0], "cacs_jitter_shift": 0}).train()
    exact_roi = exact.cacs.roi_features
    exact.cacs.roi_features = lambda features, boxes: (seen.append(boxes), exact_roi(features, boxes))[1]
    exact(images, targets)
    assert all(torch.equal(b, t["boxes"]) for b, t in zip(seen[0], targets))


def test_cc_levels_command_summarises_a_split(tmp_path, capsys):
    """``overlapseg cc-levels``: medians per class and keypoint group over a split's ground
    truth, printed and written as JSON (an untrained model: levels near the 0.01 prior)."""
    import json

    import numpy as np

    from overlapseg.cli import main
    from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
    from overlapseg.train.base import MODEL_FORMAT, get_trainer

    klass = get_trainer("ccnet")
    trainer = klass({**klass.SMOKE_PARAMS, "image_size": 64})
    model_dir = tmp_path / "cc"
    model_dir.mkdir()
    torch.save({"format": MODEL_FORMAT, "trainer": "ccnet", "params": trainer.params, "seed": 0,
                "state_dict": trainer.build_model().state_dict()}, model_dir / "model.pt")
    yy, xx = np.mgrid[:64, :64]
    samples = []
    for i in range(2):
        cell = (yy - 30) ** 2 + (xx - 28 - 3 * i) ** 2 <= 225
        nucleus = (yy - 30) ** 2 + (xx - 28 - 3 * i) ** 2 <= 16
        image = np.where(cell, 140, 220).astype(np.uint8)
        samples.append(Sample(f"img{i}", image, [Instance(cell, "cytoplasm"), Instance(nucleus, "nucleus", 0)]))
    data = write_canonical_dataset(samples, tmp_path / "data")
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": [], "val": ["img0", "img1"], "test": []}))
    out = tmp_path / "levels.json"
    assert main(["cc-levels", "--model-dir", str(model_dir), "--data", str(data),
                 "--splits", str(splits), "--out", str(out)]) in (0, None)
    summary = json.loads(out.read_text())
    for cls in ("cytoplasm", "nucleus"):
        assert summary[cls]["corner"]["n"] == 4 * 2 and summary[cls]["centre"]["n"] == 2
        assert 0 <= summary[cls]["corner"]["peak"] < 0.2  # the focal-loss prior, untrained
        assert 0 <= summary[cls]["background"] <= 1
    printed = capsys.readouterr().out
    assert "cytoplasm corner keypoints    8  median heatmap peak" in printed

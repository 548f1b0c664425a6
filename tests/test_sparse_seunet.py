import itertools
import math

import numpy as np
import pytest
import torch

from overlapseg.models.sparse_seunet import (SPARSE_DEFAULTS, build_sparse_seunet,
                                             candidate_scores, coordinates, core_ranges,
                                             match_instances,
                                             matching_score, mask_iou, normalise_activation_maps,
                                             overlap_targets, predict_instances, sparse_losses,
                                             sparse_params)
from overlapseg.models.sliding_window import tile_starts

torch.set_num_threads(1)

TINY = {"base_channels": 4, "depth": 2, "n_instances": 6, "inst_dim": 8, "mask_dim": 8}
VARIANTS = {
    "vanilla": {},
    "overlap": {"overlap_head": True},
    "overlap+attention": {"overlap_head": True, "attention_map": True},
    "multi-level": {"multi_level": True},
    "objectness": {"iou_objectness": True},
    "all": {"overlap_head": True, "attention_map": True, "multi_level": True,
            "iou_objectness": True},
}


def two_cells(size: int = 64):
    """Grey image with two overlapping dark discs, their masks and cytoplasm labels."""
    yy, xx = np.mgrid[:size, :size]
    c1 = (yy - 24) ** 2 + (xx - 24) ** 2 <= 12 ** 2
    c2 = (yy - 38) ** 2 + (xx - 40) ** 2 <= 12 ** 2
    image = np.full((size, size), 0.8, np.float32)
    image[c1] -= 0.25
    image[c2] -= 0.25
    return image, {"masks": torch.from_numpy(np.stack([c1, c2])), "labels": torch.tensor([1, 1])}


def tiny_model(seed: int = 0, **extra):
    p = sparse_params({**TINY, **extra})
    torch.manual_seed(seed)
    return build_sparse_seunet(p), p


# ----------------------------------------------------------------------------- params
def test_defaults_follow_the_thesis_on_top_of_seunet():
    assert SPARSE_DEFAULTS["n_instances"] == 100 and SPARSE_DEFAULTS["match_lambda"] == 0.8
    assert SPARSE_DEFAULTS["lr"] == 5e-5 and SPARSE_DEFAULTS["weight_decay"] == 0.005
    assert SPARSE_DEFAULTS["branch_convs"] == 4 and SPARSE_DEFAULTS["mask_threshold"] == 0.5
    assert {"base_channels", "depth", "norm", "se_reduction"} <= set(SPARSE_DEFAULTS)
    # the trainer adds the SEU-Net recipe (crops, schedule) on top of the network's keys
    from overlapseg.train.sparse_seunet import SparseSEUNetTrainer
    assert {"crop", "tile", "iterations"} <= set(SparseSEUNetTrainer.DEFAULTS)
    assert "crop" not in SPARSE_DEFAULTS
    assert not any(SPARSE_DEFAULTS[k] for k in ("overlap_head", "attention_map", "multi_level",
                                                "iou_objectness"))


@pytest.mark.parametrize("bad, message", [
    ({"attention_map": True}, "needs the overlap head"),
    ({"match_lambda": 1.5}, "match_lambda"),
    ({"n_instances": 0}, "n_instances"),
    ({"accumulate": 0}, "accumulate"),
    ({"input_scale": 0}, "input_scale"),
    ({"input_scale": -0.5}, "input_scale"),
    ({"input_scale": True}, "input_scale"),
    ({"input_scale": "half"}, "input_scale"),
])
def test_bad_params_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        sparse_params(bad)
    with pytest.raises(KeyError, match="unknown"):
        sparse_params({"n_instance": 3})


# ----------------------------------------------------------------------------- matching
def test_matching_score_and_assignment_hand_made_3x3():
    # 1x4 image; instances g0 = {0, 1}, g1 = {2}, g2 = {3}, all cytoplasm (class 1)
    gt = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 1, 0]], [[0, 0, 0, 1]]], dtype=torch.float32)
    labels = torch.tensor([1, 1, 1])
    # candidates (binary masks): c0 = g0 exactly but almost surely not a cell; c1 = {0, 1, 2};
    # c2 = {3}
    pred = torch.tensor([[[1, 1, 0, 0]], [[1, 1, 1, 0]], [[0, 0, 0, 1]]], dtype=torch.float32)
    mask_logits = (pred * 2 - 1) * 40.0
    prob = torch.tensor([1e-4, 0.9, 0.5])
    logits = torch.stack([torch.logit(prob), torch.zeros(3)], dim=1)  # class 2 unused
    dice = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.0, 0.0, 1.0]])  # 2|P&G|/(|P|+|G|)
    expected = prob[:, None] ** 0.2 * dice ** 0.8
    score = matching_score(logits, mask_logits, gt, labels, 0.8)
    torch.testing.assert_close(score, expected, rtol=1e-4, atol=1e-6)

    rows, cols = match_instances(logits, mask_logits, gt, labels, 0.8)
    best = max(itertools.permutations(range(3)),
               key=lambda s: sum(expected[i, s[i]] for i in range(3)))
    # the class term hands g0 to c1 although c0's mask is the exact one
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == list(best) == [1, 0, 2]
    # by Dice alone (lambda = 1) the exact mask wins
    _, cols = match_instances(logits, mask_logits, gt, labels, 1.0)
    assert cols.tolist() == [0, 1, 2]


def test_matching_uses_the_instance_class_and_handles_no_instances():
    gt = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    mask_logits = torch.tensor([[[9.0, -9.0]], [[9.0, -9.0]]])  # both candidates cover pixel 0
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])  # c0 says cytoplasm, c1 nucleus
    rows, cols = match_instances(logits, mask_logits, gt, torch.tensor([2, 1]), 0.5)
    assert dict(zip(rows.tolist(), cols.tolist())) == {1: 0, 0: 1}
    rows, cols = match_instances(logits, mask_logits, gt[:0], torch.zeros(0, dtype=torch.int64))
    assert rows.numel() == cols.numel() == 0


# ----------------------------------------------------------------------------- network
def test_masks_are_kernel_times_mask_features():
    model, p = tiny_model()
    out = model(torch.rand(2, 1, 16, 20))
    n, d = p["n_instances"], p["mask_dim"]
    assert out["logits"].shape == (2, n, 2)
    assert out["kernels"].shape == (2, n, d) and out["mask_features"].shape == (2, d, 16, 20)
    assert out["masks"].shape == out["activation_maps"].shape == (2, n, 16, 20)
    torch.testing.assert_close(out["masks"], torch.einsum("bnd,bdhw->bnhw", out["kernels"],
                                                          out["mask_features"]))
    assert "overlap" not in out and "objectness" not in out
    with pytest.raises(ValueError, match="multiple of the network stride 4"):
        model(torch.rand(1, 1, 18, 20))


def test_activation_maps_are_normalised_to_sum_one():
    torch.testing.assert_close(normalise_activation_maps(torch.tensor([[[[1.0, 3.0]]]])),
                               torch.tensor([[[0.25, 0.75]]]))
    model, _ = tiny_model()
    maps = model(torch.rand(1, 1, 16, 16))["activation_maps"]
    assert ((maps > 0) & (maps < 1)).all()
    norm = normalise_activation_maps(maps)
    torch.testing.assert_close(norm.sum(-1), torch.ones(1, maps.shape[1]))


# ----------------------------------------------------------------------------- losses
def test_loss_decreases_on_a_two_cell_image():
    image, target = two_cells()
    model, p = tiny_model(inst_dim=16, mask_dim=16, n_instances=8, lr=1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    x = torch.from_numpy(image)[None, None]
    history = []
    for _ in range(30):
        losses = sparse_losses(model(x), [target], p)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(total.detach()))
    assert set(losses) == {"loss_cls", "loss_dice", "loss_bce"}
    assert history[-1] < 0.7 * history[0]


def test_losses_are_weighted_and_images_without_instances_train_to_background():
    model, p = tiny_model()
    out = model(torch.rand(2, 1, 16, 16))
    empty = {"masks": torch.zeros(0, 16, 16), "labels": torch.zeros(0, dtype=torch.int64)}
    cut = {"masks": torch.zeros(1, 16, 16, dtype=torch.bool), "labels": torch.tensor([2])}
    losses = sparse_losses(out, [empty, cut], p)  # a cropped-away instance counts as none
    assert losses["loss_dice"] == 0 and losses["loss_bce"] == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.head.cls.bias.grad.abs().sum() > 0
    # same batch with weights doubled: every term doubles
    double = sparse_losses(out, [empty, cut], {**p, "lambda_cls": 2 * p["lambda_cls"]})
    torch.testing.assert_close(double["loss_cls"], 2 * losses["loss_cls"])


def test_loss_input_errors():
    model, p = tiny_model()
    out = model(torch.rand(1, 1, 16, 16))
    ok = {"masks": torch.ones(1, 16, 16), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="1 targets for a batch of 2"):
        sparse_losses({k: torch.cat([v, v]) for k, v in out.items()}, [ok], p)
    with pytest.raises(ValueError, match=r"masks must be \(n, 16, 16\)"):
        sparse_losses(out, [{"masks": torch.ones(1, 8, 8), "labels": torch.tensor([1])}], p)
    with pytest.raises(ValueError, match="category ids in 1..2"):
        sparse_losses(out, [{"masks": torch.ones(1, 16, 16), "labels": torch.tensor([0])}], p)
    model, p = tiny_model(overlap_head=True, attention_map=True)
    with pytest.raises(ValueError, match="prob_map"):
        sparse_losses(model(torch.rand(1, 1, 16, 16)), [ok], p)


def test_overlap_target_counts_cells_only_and_attention_map_guides_the_loss():
    masks = torch.zeros(3, 1, 4, dtype=torch.bool)
    masks[0, 0, :3] = masks[1, 0, 2:] = True  # two cells overlapping at pixel 2
    masks[2, 0, 1:3] = True  # a nucleus over pixels 1-2 adds no overlap
    target = {"masks": masks, "labels": torch.tensor([1, 1, 2])}
    assert overlap_targets([target], (1, 4), "cpu").tolist() == [[[0.0, 0.0, 1.0, 0.0]]]

    image, cells = two_cells(32 + 8)
    model, p = tiny_model(overlap_head=True, attention_map=True)
    out = model(torch.from_numpy(image[:32, :32])[None, None])
    cells = {"masks": cells["masks"][:, :32, :32], "labels": cells["labels"]}
    flat = sparse_losses(out, [cells], p, prob_map=torch.zeros(1, 32, 32))["loss_overlap"]
    guided = sparse_losses(out, [cells], p, prob_map=torch.full((1, 32, 32), 0.9))["loss_overlap"]
    assert flat != guided


def test_iou_of_paired_masks():
    a = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    b = torch.tensor([[[0, 1, 1, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([1 / 3, 0.0]))


# ----------------------------------------------------------------------------- variants
@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_trains_a_step_and_predicts(name):
    image, target = two_cells(48)
    model, p = tiny_model(**VARIANTS[name])
    opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    x = torch.from_numpy(image)[None, None]
    out = model(x)
    assert ("overlap" in out) == p["overlap_head"] and ("objectness" in out) == p["iou_objectness"]
    prob_map = torch.rand(1, 48, 48) if p["attention_map"] else None
    losses = sparse_losses(out, [target], p, prob_map=prob_map)
    expected = {"loss_cls", "loss_dice", "loss_bce"}
    expected |= {"loss_overlap"} if p["overlap_head"] else set()
    expected |= {"loss_iou"} if p["iou_objectness"] else set()
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    before = [q.detach().clone() for q in model.parameters()]
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    assert any(not torch.equal(a, q) for a, q in zip(before, model.parameters()))

    # every candidate kept: threshold 0 on scores and on mask probabilities
    gray = image[:45, :38]  # not a multiple of the stride: padded, then cropped back
    found = predict_instances(model, gray, {**p, "score_threshold": 0.0, "mask_threshold": 0.0})
    assert len(found) == p["n_instances"]
    scores = [s for _, s, _ in found]
    assert scores == sorted(scores, reverse=True)
    for mask, score, category in found:
        assert mask.dtype == bool and mask.shape == gray.shape and mask.all()
        assert isinstance(score, float) and 0.0 <= score <= 1.0
        assert isinstance(category, int) and category in (1, 2)
    assert model.training  # mode restored


# ----------------------------------------------------------------------------- inference
def test_candidate_scores_by_hand():
    logits = torch.logit(torch.tensor([[0.8, 0.1], [0.3, 0.6]]))
    mask_logits = torch.logit(torch.tensor([[[0.9, 0.7, 0.2, 0.1]], [[0.4, 0.3, 0.2, 0.1]]]))
    scores, cls, binary = candidate_scores(logits, mask_logits, None, 0.5)
    # c0: class 1 at 0.8, maskness mean(0.9, 0.7) = 0.8; c1: empty mask -> maskness 0
    torch.testing.assert_close(scores, torch.tensor([0.64, 0.0]))
    assert cls.tolist() == [0, 1] and binary[0, 0].tolist() == [True, True, False, False]
    scores, _, _ = candidate_scores(logits, mask_logits, torch.logit(torch.tensor([0.2, 0.5])), 0.5)
    torch.testing.assert_close(scores[0], torch.tensor(math.sqrt(0.8 * 0.2) * 0.8))


def test_core_ranges_partition_the_image():
    for size, tile, stride in [(100, 32, 16), (64, 32, 32), (70, 32, 20)]:
        starts = tile_starts(size, tile, stride)
        cores = core_ranges(starts, tile, size)
        assert cores[0][0] == 0 and cores[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
        assert all(s <= lo < hi <= s + tile for s, (lo, hi) in zip(starts, cores))


class GreyLevelModel(torch.nn.Module):
    """Exact instance 'network' for testing the tiling: candidate k is the set of pixels of
    grey level LEVELS[k] (cells painted in distinct levels), class cytoplasm."""

    LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    stride = 4

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, origin=None):
        levels = torch.tensor(self.LEVELS)[None, :, None, None]
        masks = torch.where((x - levels).abs() < 0.01, 10.0, -10.0)
        logits = torch.tensor([4.0, -4.0]).expand(x.shape[0], len(self.LEVELS), 2)
        return {"logits": logits, "masks": masks}


def test_tiled_prediction_returns_each_cell_once_and_whole():
    # six discs of radius 6 painted in distinct grey levels on a 90 x 90 image (not a
    # multiple of the tile), several of them cut by tile borders
    yy, xx = np.mgrid[:90, :90]
    centres = [(10, 10), (30, 33), (47, 16), (16, 60), (60, 75), (82, 45)]
    image = np.full((90, 90), 0.9, np.float32)
    cells = []
    for (cy, cx), level in zip(centres, GreyLevelModel.LEVELS):
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        image[cell] = level
        cells.append(cell)
    model = GreyLevelModel()
    p = sparse_params({**TINY, "score_threshold": 0.5})
    expected_score = 1 / (1 + math.exp(-4.0)) / (1 + math.exp(-10.0))  # class x maskness
    for tile, stride in [(None, None), (32, 16), (48, 24), (64, 32)]:
        found = predict_instances(model, image, {**p, "tile": tile, "stride": stride})
        assert len(found) == len(cells), (tile, stride)
        for mask, score, category in found:
            assert sum(np.array_equal(mask, c) for c in cells) == 1, (tile, stride)
            assert category == 1 and score == pytest.approx(expected_score)
    with pytest.raises(ValueError, match="not a multiple of the network stride"):
        predict_instances(model, image, {**p, "tile": 30, "stride": 15})
    with pytest.raises(ValueError, match=r"\(H, W\) grey image"):
        predict_instances(model, image[None], p)


def test_input_scale_predicts_at_the_network_scale_and_returns_masks_at_the_image_size():
    yy, xx = np.mgrid[:90, :90]
    centres = [(20, 20), (22, 62), (64, 40)]
    image = np.full((90, 90), 0.9, np.float32)
    cells = []
    # levels whose 2x2 averages with the background match no level (no border instances)
    for (cy, cx), level in zip(centres, GreyLevelModel.LEVELS[1::2]):
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= 14 ** 2
        image[cell] = level
        cells.append(cell)
    model, seen = GreyLevelModel(), []
    forward = model.forward
    model.forward = lambda x, origin=None: seen.append(tuple(x.shape[-2:])) or forward(x, origin)
    p = sparse_params({**TINY, "score_threshold": 0.5, "input_scale": 0.5})
    found = predict_instances(model, image, p)
    assert seen == [(48, 48)]           # 45 px (90 x 0.5) padded to the stride 4
    assert len(found) == len(cells)
    for mask, _, _ in found:
        assert mask.shape == image.shape
        iou = max((mask & c).sum() / (mask | c).sum() for c in cells)
        assert iou > 0.8                # the disc's border pixels are mixed at half scale
    seen.clear()
    assert len(predict_instances(model, image, {**p, "input_scale": 1.0})) == len(cells)
    assert seen == [(92, 92)]


def test_trainer_resamples_images_and_instance_masks_by_input_scale(tmp_path):
    from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
    from overlapseg.train.base import DataRef
    from overlapseg.train.sparse_seunet import SparseSEUNetTrainer
    yy, xx = np.mgrid[:64, :64]
    big = (yy - 20) ** 2 + (xx - 24) ** 2 <= 12 ** 2
    speck = (yy == 50) & (xx == 50)     # one pixel: gone at half scale
    image = np.full((64, 64), 220, np.uint8)
    image[big] = 120
    root = write_canonical_dataset([Sample("a", image, [Instance(big, "cytoplasm"),
                                                        Instance(speck, "cytoplasm")])],
                                   tmp_path / "data")
    params = {**SparseSEUNetTrainer.SMOKE_PARAMS, "input_scale": 0.5, "crop": 32, "threads": 1}
    trainer = SparseSEUNetTrainer(params, 0, "cpu")
    data = trainer.load_data([DataRef(root, ["a"])])
    stack, labels = data.items[0]
    assert stack.shape == (3, 32, 32) and list(labels) == [1, 1]
    assert set(np.unique(stack[1:])) <= {0.0, 1.0}
    assert abs(stack[1].sum() - big.sum() / 4) < 0.1 * big.sum() / 4 and stack[2].sum() == 0
    x, targets, _, origins = trainer.sample_batch(data, np.random.default_rng(0))
    assert x.shape == (2, 1, 32, 32) and origins.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert [len(t["labels"]) for t in targets] == [1, 1]      # the vanished speck is dropped


def test_training_is_bitwise_reproducible():
    image, target = two_cells(32)
    runs = []
    for _ in range(2):
        model, p = tiny_model(seed=3, multi_level=True, iou_objectness=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for _ in range(2):
            losses = sparse_losses(model(torch.from_numpy(image)[None, None]),
                                   [target], p)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        runs.append((losses, [q.detach().clone() for q in model.parameters()]))
    (la, pa), (lb, pb) = runs
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))


# ----------------------------------------------------------------------------- coordinates
def test_a_crop_and_the_same_region_of_a_tile_get_identical_coordinates():
    tile = torch.zeros(1, 3, 256, 256)
    crop = tile[:, :, 64:192, 96:224]               # a 128 px crop at (y, x) = (64, 96)
    for stride in (1, 2, 4):                        # the branch inputs of every decoder level
        t = coordinates(tile[..., ::stride, ::stride], 128, torch.tensor([[0.0, 0.0]]), stride)
        c = coordinates(crop[..., ::stride, ::stride], 128, torch.tensor([[64.0, 96.0]]), stride)
        assert torch.equal(c, t[:, :, 64 // stride:192 // stride, 96 // stride:224 // stride])
    # a crop at the image origin spans [-1, 1] (within half a pixel) in the crop's unit
    c0 = coordinates(crop, 128)
    assert c0.min() == pytest.approx(-1 + 1 / 128) and c0.max() == pytest.approx(1 - 1 / 128)
    # one pixel is one pixel: per-input normalisation would squeeze the tile into [-1, 1]
    t = coordinates(tile, 128)
    assert (t[0, 0, 0, 1] - t[0, 0, 0, 0]).item() == pytest.approx(2 / 128)
    legacy = coordinates(tile)
    assert legacy.min() == -1 and legacy.max() == 1


def test_the_model_sees_the_same_coordinates_in_a_crop_and_in_a_tile(monkeypatch):
    """Every branch input's coordinates for a crop equal the tile's over the same pixels."""
    import overlapseg.models.sparse_seunet as sparse
    from overlapseg.models.sparse_seunet import coordinate_unit
    assert coordinate_unit({"coord_unit": None, "crop": 192}) == 192.0   # default: the crop
    assert coordinate_unit({"coord_unit": 0, "crop": 192}) is None
    model, p = tiny_model(coord_unit=32, multi_level=True)
    seen = []
    monkeypatch.setattr(sparse, "coordinates",
                        lambda *a, **k: seen.append(coordinates(*a, **k)) or seen[-1])
    x = torch.rand(1, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        model(x)
        tile_coords = list(seen)
        seen.clear()
        model(x[..., 16:48, 32:64], origin=torch.tensor([[16.0, 32.0]]))
    assert len(seen) == len(tile_coords) == 3          # bottleneck + two decoder levels
    for t, c in zip(tile_coords, seen):
        s = 64 // t.shape[-1]
        assert torch.equal(c, t[..., 16 // s:48 // s, 32 // s:64 // s])


def test_trainer_batches_carry_crop_origins():
    from overlapseg.train.seunet import random_crop_at
    stack = np.arange(2 * 40 * 50, dtype=np.float32).reshape(2, 40, 50)
    window, (y, x) = random_crop_at(stack, 16, np.random.default_rng(0))
    assert np.array_equal(window, stack[:, y:y + 16, x:x + 16])
    small = stack[:, :10, :12]
    window, (y, x) = random_crop_at(small, 16, np.random.default_rng(0))
    assert window.shape == (2, 16, 16) and (y, x) == (-3, -2)   # reflect padding 3 + 3, 2 + 2
    assert np.array_equal(window[:, 3:13, 2:14], small)
    assert sparse_params({"coord_unit": 0})["coord_unit"] == 0
    with pytest.raises(ValueError, match="coord_unit"):
        sparse_params({"coord_unit": -4})
    model, _ = tiny_model(coord_unit=0)
    assert model.coord_unit is None            # 0: SparseInst's per-input coordinates

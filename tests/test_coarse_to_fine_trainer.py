"""Coarse-to-fine generator trainer and its Table I baselines (issue 19): stage losses, synthesis
determinism, masks equal to the decoded instances and lying on the generated foreground, the
k-terminal cut inside the synthesis chain, baseline layouts, stage figure."""
import csv
import math

import numpy as np
import pytest
import torch

from overlapseg.data.canonical import CanonicalDataset, Instance, Sample, write_canonical_dataset
from overlapseg.gan.coarse_to_fine import masks_from_labels, palette, render_ovals
from overlapseg.gan.cyclegan import ImagePool
from overlapseg.gan.layouts import RealLayouts, polygon_layout, render_category, warp_masks
from overlapseg.train.base import DataRef, Trainer, TrainInputs, iteration_torch_seed
from overlapseg.train.coarse_to_fine import CoarseToFineTrainer, stages_figure
from overlapseg.train.gan import gan_synthesize
from overlapseg.train.polygon_cyclegan import PolygonCycleGANTrainer
from overlapseg.train.real_pix2pix import RealTransformPix2PixTrainer

torch.set_num_threads(1)
TRAIN = ["img0", "img1", "img2"]


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four 48x48 images: two overlapping cells with a nucleus each and a pair of touching nuclei."""
    rng = np.random.default_rng(1)
    samples = []
    for i in range(4):
        shape = (48, 48)
        image = np.full(shape, 220, np.uint8)
        instances = []
        cy, cx = rng.integers(20, 28, 2)
        for dy, dx in ((-6, -8), (6, 8)):
            cell = _disc(shape, cy + dy, cx + dx, 10)
            image[cell] -= 50
            instances.append(Instance(cell, "cytoplasm"))
            for ny, nx in ((cy + dy, cx + dx - 3), (cy + dy, cx + dx + 4)):  # touching nuclei
                nucleus = _disc(shape, ny, nx, 3.5)
                image[nucleus] = 90
                instances.append(Instance(nucleus, "nucleus", len(instances) - 1 - (nx > cx + dx)))
        samples.append(Sample(f"img{i}", image, instances))
    return write_canonical_dataset(samples, tmp_path_factory.mktemp("c2f") / "data")


def _train(klass, dataset, out, **extra):
    params = {**klass.SMOKE_PARAMS, "iterations": 3, "checkpoint_every": 3, "threads": 1, **extra}
    trainer = klass(params, 7, "cpu", TrainInputs([DataRef(dataset, TRAIN)], None))
    return trainer.train(out).parent


@pytest.fixture(scope="module")
def c2f_model(dataset, tmp_path_factory):
    return _train(CoarseToFineTrainer, dataset, tmp_path_factory.mktemp("models") / "c2f")


def test_every_stage_is_trained_with_finite_losses(c2f_model):
    rows = list(csv.DictReader(open(c2f_model / "log.csv")))
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    for stage, keys in {"s1_": ["G_gan_ab", "G_cycle_a", "G_cycle_b", "D_a", "D_b"],
                        "s2_": ["G_gan_ab", "G_cycle_a", "G_cycle_b", "G_paired", "D_a", "D_b"],
                        "s3_": ["G_gan", "G_l1", "D_real", "D_fake"]}.items():
        for key in keys:
            values = [float(r[stage + key]) for r in rows]
            assert all(math.isfinite(v) for v in values), (stage, key)
    # stage 2 trains on corresponding pairs: its paired MAE is positive and in the total
    assert all(float(r["s2_G_paired"]) > 0 for r in rows)
    for opt in ("stage1_G", "stage1_D", "stage2_G", "stage2_D", "stage3_G", "stage3_D"):
        assert f"lr_{opt}" in rows[0]
    # every network moved away from its initialisation
    state = torch.load(c2f_model / "model.pt", weights_only=False)
    assert not any(k.startswith("pools.") for k in state["state_dict"])
    fresh = CoarseToFineTrainer(state["params"], 7, "cpu")
    torch.manual_seed(7)
    init = fresh.build_model().state_dict()
    for net in ("stage1.G_ab", "stage1.D_b", "stage2.G_ab", "stage2.D_b", "stage3.G", "stage3.D"):
        keys = [k for k in init if k.startswith(net + ".") and k.endswith("weight")]
        assert any(not torch.equal(init[k], state["state_dict"][k]) for k in keys), net


def test_synthesis_is_deterministic_with_a_fixed_seed(c2f_model, dataset, tmp_path):
    outs = [gan_synthesize(c2f_model, dataset, TRAIN, tmp_path / run / "c2f", 3, 11, {})
            for run in ("a", "b")]
    assert (outs[0] / "annotations.json").read_bytes() == (outs[1] / "annotations.json").read_bytes()
    a = CanonicalDataset(outs[0])
    assert a.names == ["c2f_00000", "c2f_00001", "c2f_00002"]
    for name in a.names:
        assert (outs[0] / "images" / f"{name}.png").read_bytes() == \
            (outs[1] / "images" / f"{name}.png").read_bytes()
        assert a.load_image(name).shape == (48, 48)
    other = CanonicalDataset(gan_synthesize(c2f_model, dataset, TRAIN, tmp_path / "c" / "c2f", 3, 12, {}))
    assert any(not np.array_equal(a.load_image(n), other.load_image(n)) for n in a.names)
    info = a.data["info"]
    assert info["method"] == "coarse-to-fine" and info["category"] == "nucleus" and info["seed"] == 11


def test_synthetic_masks_are_the_decoded_instances_on_generated_foreground(c2f_model, dataset, tmp_path):
    trainer, model = Trainer.load(c2f_model)
    # a 3-iteration generator draws noise: no nucleus on a box centre, only blobs the size rule
    # drops, which the closing merges into one sheet. Decode it raw (processing is tested in
    # test_coarse_to_fine) so that the contract below is not vacuous
    trainer.params["c2f"].update(min_extra_fraction=0.0, close_radius=0)
    out_dir = trainer.synthesize_set(model, dataset, TRAIN, tmp_path / "gen", 3, 4, {})
    ds = CanonicalDataset(out_dir)
    assert not ds.masks(ds.names[0], "cytoplasm").size  # only the configured category
    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    total = 0
    for i, name in enumerate(ds.names):
        out = trainer.generate(model, real, np.random.default_rng([4, i]), iteration_torch_seed(4, i))
        decoded = masks_from_labels(out["labels"])
        decoded = [m for m in decoded if m.sum() >= trainer.params["min_pixels"]]
        got = ds.masks(name, "nucleus")
        assert len(got) == len(decoded) and all(np.array_equal(g, d) for g, d in zip(got, decoded))
        assert all((m <= out["foreground"]).all() for m in got)
        np.testing.assert_array_equal(ds.load_image(name), np.round(out["image"] * 255).astype(np.uint8))
        # the stage-3 condition is the rendering of exactly these masks, with a cell around
        # each nucleus (the data annotates cytoplasm: condition_cells auto -> on)
        cells = out["cells"]
        np.testing.assert_array_equal(out["condition"],
                                      render_category(np.asarray(got), "nucleus", 2, (48, 48), cells))
        assert len(cells) == len(got) and all((m <= c).all() for m, c in zip(got, cells))
        if len(got):  # cells, not the nuclei alone
            assert cells.any(0).sum() > got.any(0).sum()
        total += len(got)
    assert total > 0


CENTRES = np.array([[16.0, 14.0], [16.0, 29.0], [29.0, 22.0]])


def _oracle_stages(trainer, model, monkeypatch):
    """Stage 1 draws three half-size ovals (boxes 16 px); stage 2 paints each box-sized
    coloured oval in full colour without a boundary class, so the three ovals touch and form
    one component that only the k-terminal cut can split. Stage 3 stays the trained net."""
    real_translate = trainer.translate_image

    def translate(G, x, seed=None, dropout=False):
        if G is model["stage1"]["G_ab"]:
            return render_ovals(x.shape[1:], CENTRES, np.full((3, 2), 16.0), 0.25, 0.5)[None]
        if G is model["stage2"]["G_ab"]:
            colour = x / np.maximum(x.max(axis=0, keepdims=True), 1e-6)
            return np.concatenate([colour * (x.max(axis=0) > 0), np.zeros((1,) + x.shape[1:])])
        return real_translate(G, x, seed, dropout)

    monkeypatch.setattr(trainer, "translate_image", translate)


def test_k_terminal_cut_splits_merged_instances_in_the_synthesis_chain(c2f_model, dataset, tmp_path,
                                                                       monkeypatch):
    trainer, model = Trainer.load(c2f_model)
    _oracle_stages(trainer, model, monkeypatch)
    ds = CanonicalDataset(trainer.synthesize_set(model, dataset, TRAIN, tmp_path / "gen", 2, 0, {}))
    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    for i, name in enumerate(ds.names):
        out = trainer.generate(model, real, np.random.default_rng([0, i]), iteration_torch_seed(0, i))
        from scipy import ndimage
        assert ndimage.label(out["foreground"])[1] == 1  # one merged component ...
        masks = ds.masks(name, "nucleus")
        assert len(masks) == 3  # ... split into one instance per box
        for m, c in zip(masks, CENTRES):
            assert m[int(c[0]), int(c[1])] and (m <= out["foreground"]).all()
        assert masks.sum(axis=0).max() == 1 and (masks.any(axis=0) == out["foreground"]).all()
        # colours of the stage-2 input differ between touching instances (palette colours)
        assert len({tuple(out["colour_boxes"][:, int(c[0]), int(c[1])].round(3)) for c in CENTRES}) == 3
        assert all(np.isclose(palette(8), out["colour_boxes"][:, int(c[0]), int(c[1])]).all(1).any()
                   for c in CENTRES)


def test_cytoplasm_category_and_layout_from_real_counts(dataset, tmp_path):
    model_dir = _train(CoarseToFineTrainer, dataset, tmp_path / "cyto", category="cytoplasm",
                       iterations=1, checkpoint_every=1)
    trainer, model = Trainer.load(model_dir)
    real = RealLayouts([(dataset, TRAIN)], "cytoplasm")
    assert list(real.counts) == [2, 2, 2]
    out = trainer.generate(model, real, np.random.default_rng(0), 0)
    assert len(out["points"]) == 2 and out["image"].shape == (48, 48)
    ds = CanonicalDataset(trainer.synthesize_set(model, dataset, TRAIN, tmp_path / "gen", 1, 0, {}))
    assert not ds.masks(ds.names[0], "nucleus").size
    with pytest.raises(ValueError, match="category"):
        CoarseToFineTrainer({"category": "overlap"})


def test_image_pool_fills_then_swaps_reproducibly():
    pool = ImagePool(2, 1, 4)
    pool.rng = np.random.default_rng(0)
    first = [torch.full((1, 1, 4, 4), float(v)) for v in range(6)]
    out = [pool.query(x) for x in first]
    assert int(pool.count) == 2 and [float(o.mean()) for o in out[:2]] == [0.0, 1.0]
    assert {float(v) for v in pool.images.mean((1, 2, 3))} != {0.0, 1.0}  # later fakes swapped in
    again = ImagePool(2, 1, 4)
    again.rng = np.random.default_rng(0)
    assert all(torch.equal(a, again.query(x)) for a, x in zip(out, first))
    assert set(dict(pool.named_buffers())) == {"images", "count"}  # checkpointed with the model


def test_polygon_layout_follows_real_instance_sizes(dataset):
    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    masks = polygon_layout((96, 96), 8, real, np.random.default_rng(3))
    assert 6 <= len(masks) <= 8 and masks.sum(axis=0).max() == 1  # max_overlap 0: disjoint
    radii = np.sqrt(masks.reshape(len(masks), -1).sum(1) / np.pi)
    assert abs(radii.mean() - real.radii.mean()) < 0.35 * real.radii.mean()


def test_warp_masks_identity_and_random_transform(dataset):
    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    masks = real.masks[0]
    same = warp_masks(masks, np.random.default_rng(0), rotation=0, scale=(1, 1), shear=0,
                      translate_frac=0, elastic_alpha=0)
    np.testing.assert_array_equal(same, masks)
    moved = warp_masks(masks, np.random.default_rng(0))
    assert 1 <= len(moved) <= len(masks) and not np.array_equal(moved.any(0), masks.any(0))
    again = warp_masks(masks, np.random.default_rng(0))
    np.testing.assert_array_equal(moved, again)


@pytest.mark.parametrize("klass", [PolygonCycleGANTrainer, RealTransformPix2PixTrainer])
def test_baseline_generators_write_exact_layout_masks(klass, dataset, tmp_path):
    model_dir = _train(klass, dataset, tmp_path / klass.name, iterations=2, checkpoint_every=2)
    trainer, model = Trainer.load(model_dir)
    ds = CanonicalDataset(trainer.synthesize_set(model, dataset, TRAIN, tmp_path / "gen", 2, 3, {}))
    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    assert ds.data["info"]["method"] == klass.METHOD
    for i, name in enumerate(ds.names):
        out = trainer.generate(model, real, np.random.default_rng([3, i]), iteration_torch_seed(3, i))
        got = ds.masks(name, "nucleus")
        assert len(got) == len(out["masks"]) > 0
        assert all(np.array_equal(g, m) for g, m in zip(got, out["masks"]))


def test_stage_figure(c2f_model, dataset, tmp_path):
    png, pdf = tmp_path / "demo_c2f_stages.png", tmp_path / "demo_c2f_stages.pdf"
    stages_figure(c2f_model, dataset, TRAIN, png, pdf, n=2, seed=0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.stat().st_size > 1000


def test_stage3_on_cytology_data_is_conditioned_on_cells_and_content_crops(dataset, tmp_path):
    """Issue 28: on data that annotates cytoplasm, stage 3 sees the real cells in training and
    cells drawn around the generated nuclei at synthesis; its training crops hold instances;
    condition_cells=false keeps the paper's nuclei-only condition."""
    trainer = CoarseToFineTrainer({**CoarseToFineTrainer.SMOKE_PARAMS, "crop_size": 16}, 7, "cpu",
                                  TrainInputs([DataRef(dataset, TRAIN)], None))
    data = trainer.load_data(trainer.inputs.train)
    assert data.annotates_cells and trainer.conditions_on_cells(data)
    for k, cond in enumerate(data.conditions):
        np.testing.assert_array_equal(cond[0].astype(bool), data.cells[k].any(0) & ~data.masks[k].any(0))
    rng = np.random.default_rng(0)
    for _ in range(20):  # 16 px crops of 48 px images: content-anchored, never empty
        cond, _ = trainer._p2p_batch(data, rng)
        assert ((cond[:, 1] > 0).flatten(1).any(1)).all()  # a nucleus in every crop
    off = CoarseToFineTrainer({**CoarseToFineTrainer.SMOKE_PARAMS, "condition_cells": False})
    data_off = off.load_data([DataRef(dataset, TRAIN)])
    assert not off.conditions_on_cells(data_off) and not any(c[0].any() for c in data_off.conditions)
    with pytest.raises(ValueError, match="condition_cells"):
        CoarseToFineTrainer({"category": "cytoplasm", "condition_cells": True})
    with pytest.raises(ValueError, match="condition_cells"):
        CoarseToFineTrainer({"condition_cells": "sometimes"})


def test_cells_around_generated_nuclei_follow_the_real_pairs(dataset):
    from overlapseg.gan.layouts import cells_around

    real = RealLayouts([(dataset, TRAIN)], "nucleus")
    assert len(real.templates) == sum(len(m) for m in real.masks)  # every nucleus lies in a cell
    nuclei = np.stack([_disc((64, 64), 20, 20, 3.5), _disc((64, 64), 44, 40, 3.5), _disc((64, 64), 2, 60, 3)])
    cells = cells_around(nuclei, real.templates, np.random.default_rng(0))
    assert cells.shape == nuclei.shape and all((n <= c).all() for n, c in zip(nuclei, cells))
    areas = cells[:2].reshape(2, -1).sum(1)
    assert (np.abs(areas - np.pi * 10 ** 2) < 40).all()  # the real cells: discs of radius 10
    again = cells_around(nuclei, real.templates, np.random.default_rng(0))
    np.testing.assert_array_equal(cells, again)
    only = RealLayouts([(dataset, TRAIN)], "cytoplasm")
    assert not only.templates and not only.cells


@pytest.mark.parametrize("bad, message", [({"close_radius": -1}, "c2f.close_radius"),
                                          ({"min_extra_fraction": 1.5}, "c2f.min_extra_fraction")])
def test_bad_decoding_params_fail_before_training(bad, message):
    with pytest.raises(ValueError, match=message):
        CoarseToFineTrainer({"c2f": bad}, 0, "cpu")

"""CCCE and copy-paste synthesis: exact masks, overlap/intensity agreement, stop criterion,
overlap bounds, determinism and provenance (train split only)."""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from overlapseg.data.canonical import (CanonicalDataset, DataError, Instance, Sample,
                                       write_canonical_dataset)
from overlapseg.synth.ccce import (CCCEConfig, ccce_image, composite, config_from_params,
                                   load_sources, write_ccce)
from overlapseg.synth.copypaste import (CopyPasteConfig, copypaste_image, source_cells,
                                        write_copypaste)
from overlapseg.synth.sources import load_source, overlap_ratio, select_pool

S = 64
BG, CELL = 200, 100
PLAIN = dict(rotation=0.0, scale=(1.0, 1.0), shear=0.0, gain=0.0, bias=0.0, noise_std=0.0)


def disc(cy, cx, r, shape=(S, S)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def flat_sample(name, centres, r=7):
    """Uniform cells (value CELL) with a nucleus each on a uniform background (BG)."""
    image = np.full((S, S), BG, np.uint8)
    inst = []
    for cy, cx in centres:
        cell = disc(cy, cx, r)
        image[cell] = CELL
        inst.append(Instance(cell, "cytoplasm"))
    for k, (cy, cx) in enumerate(centres):
        inst.append(Instance(disc(cy, cx, 2), "nucleus", k))
    return Sample(name, image, inst)


@pytest.fixture
def dataset(tmp_path):
    samples = [flat_sample("d0", [(15, 15), (45, 45)]), flat_sample("d1", [(20, 44)]),
               flat_sample("d2", [(40, 20), (15, 48)]),
               # aggregated: four cells, heavily overlapping
               flat_sample("agg", [(30, 30), (30, 36), (36, 30), (36, 36)], r=8)]
    return write_canonical_dataset(samples, tmp_path / "data")


def cells_of(sample):
    return np.stack([i.mask for i in sample.instances if i.category == "cytoplasm"])


@pytest.mark.parametrize("mode", ["divide", "absorbance"])
def test_ccce_masks_and_overlap_match_intensities(dataset, mode):
    cfg = CCCEConfig(mode=mode, th=0.45, factors=(2.2,), pool="discrete", **PLAIN)
    sources = load_sources(dataset, ["d0", "d1", "d2"], cfg)
    for i in range(4):
        rng = np.random.default_rng(i)
        sample, pasted = ccce_image(sources[0], sources, cfg, rng, f"x{i}")
        assert pasted > 0
        cells = cells_of(sample)
        count = cells.sum(0)
        img = sample.image
        # masks cover exactly the pixels that differ from the untouched background
        np.testing.assert_array_equal(img != BG, count > 0)
        # pixels in exactly one cell keep the cell intensity; combined ones (>= 2 cells) differ
        assert np.all(img[count == 1] == CELL)
        combined = (img != BG) & (img != CELL)
        np.testing.assert_array_equal(combined, count >= 2)
        assert combined.any()


def test_composite_rules():
    canvas = np.full((2, 2, 1), 0.8, np.float32)
    canvas[0, 0] = 0.4                               # an existing cell pixel
    covered = np.array([[True, False], [False, False]])
    crop = np.full((2, 2, 1), 0.5, np.float32)
    mask = np.array([[True, True], [False, False]])
    bg = np.array([0.8], np.float32)
    out = composite(canvas, covered, crop, mask, "divide", 2.5, bg)
    np.testing.assert_allclose(out[..., 0], [[(0.4 + 0.5) / 2.5, 0.5], [0.8, 0.8]])
    out = composite(canvas, covered, crop, mask, "absorbance", 2.5, bg)
    np.testing.assert_allclose(out[..., 0], [[0.8 * 0.5 * 0.625, 0.5], [0.8, 0.8]])


def test_ccce_stop_criterion_and_nuclei_follow_cells(dataset):
    cfg = CCCEConfig(th=0.3, pool="all")  # rotation/affine/jitter/noise on
    sources = load_sources(dataset, None, cfg)
    for i in range(5):
        sample, pasted = ccce_image(sources[1], sources, cfg, np.random.default_rng(i), "x")
        cells = cells_of(sample)
        frac = lambda m: m.any(0).mean() if len(m) else 0.0  # noqa: E731
        assert frac(cells) > cfg.th                 # stopped only after exceeding th
        assert frac(cells[:-1]) <= cfg.th           # and not a paste later than needed
        for k, inst in enumerate(sample.instances):
            if inst.category == "nucleus":
                parent = sample.instances[inst.parent]
                assert parent.category == "cytoplasm" and not (inst.mask & ~parent.mask).any()
        n_nuclei = sum(i.category == "nucleus" for i in sample.instances)
        assert n_nuclei == len(cells)               # every pasted cell brought its nucleus


def test_pools_and_provenance(dataset, tmp_path):
    ds = CanonicalDataset(dataset)
    assert overlap_ratio(ds.masks("agg", "cytoplasm")) > 0.1
    assert select_pool(ds, ds.names, "discrete") == ["d0", "d1", "d2"]
    assert select_pool(ds, ds.names, "aggregated") == ["agg"]
    assert select_pool(ds, ["d1", "agg"], "all") == ["d1", "agg"]
    with pytest.raises(ValueError, match="pool"):
        select_pool(ds, ds.names, "bogus")
    out = write_ccce(dataset, tmp_path / "ccce", n=3, seed=1, names=["d0", "d2", "agg"])
    info = json.loads((out / "annotations.json").read_text())["info"]
    assert info["sources"] == ["d0", "d2"]          # train names only, discrete pool only
    with pytest.raises(DataError, match="no source images"):
        write_ccce(dataset, tmp_path / "none", n=1, seed=0, names=["agg"])
    with pytest.raises(ValueError, match="unknown CCCE parameters"):
        config_from_params({"threshold": 0.3})
    assert not (tmp_path / "none").exists()


def test_few_but_heavily_overlapping_cells_are_not_discrete(tmp_path):
    """Three cells that cover each other are a clump: the discrete pool needs few cells *and*
    little overlap (CC framework's isolated-cell pool)."""
    from overlapseg.synth.sources import is_discrete
    three = flat_sample("three", [(30, 30), (30, 34), (34, 32)], r=8)
    cells = cells_of(three)
    assert len(cells) == 3 and overlap_ratio(cells) > 0.5
    assert not is_discrete(cells, max_cells=3, max_overlap=0.1)
    many_apart = cells_of(flat_sample("apart", [(10, 10), (10, 50), (50, 10), (50, 50)], r=6))
    assert not is_discrete(many_apart, max_cells=3, max_overlap=0.1)   # too many cells
    assert is_discrete(many_apart[:2], max_cells=3, max_overlap=0.1)
    ds = CanonicalDataset(write_canonical_dataset(
        [three, flat_sample("one", [(20, 20)])], tmp_path / "d"))
    assert select_pool(ds, ds.names, "discrete") == ["one"]
    assert select_pool(ds, ds.names, "aggregated") == ["three"]
    # a split of clumps only: one line naming the rule and the knobs, not an empty CCCE set
    with pytest.raises(DataError, match=r"no source images in pool 'discrete' among 1 candidates "
                                        r"\(discrete: <= 3 cells, each at most 0.1 covered by others; "
                                        r"raise synth.ccce max_overlap_ratio or max_cells_discrete\)"):
        load_sources(ds.root, ["three"], CCCEConfig(max_overlap_ratio=0.1))


def _read_all(path):
    ds = CanonicalDataset(path)
    return (path / "annotations.json").read_bytes(), [ds.load_image(n).tobytes() for n in ds.names]


@pytest.mark.parametrize("method", ["ccce", "copypaste"])
def test_determinism_and_prefix_stability(dataset, tmp_path, method):
    write = write_ccce if method == "ccce" else write_copypaste
    kw = {"pool": "all"} if method == "ccce" else {"edge_sigma": 8.0}
    a = write(dataset, tmp_path / "a", n=4, seed=3, **kw)
    b = write(dataset, tmp_path / "b", n=4, seed=3, **kw)
    c = write(dataset, tmp_path / "c", n=2, seed=3, **kw)
    d = write(dataset, tmp_path / "d", n=4, seed=4, **kw)
    assert _read_all(a) == _read_all(b)
    assert _read_all(c)[1] == _read_all(a)[1][:2]   # image i depends on (seed, i) only
    assert _read_all(d)[1] != _read_all(a)[1]
    ds = CanonicalDataset(a)
    assert len(ds) == 4 and all(img["subset"] == "synth" for img in ds.data["images"])


def test_copypaste_overlap_bound_and_masks(dataset):
    cfg = CopyPasteConfig(n_cells=(4, 6), overlap=(0.0, 0.2), near_prob=0.9, edge_sigma=8.0)
    sources = [load_source(s) for s in CanonicalDataset(dataset)]
    cells = source_cells(sources, cfg)
    assert {c.source.split("#")[0] for c in cells} == {"d0", "d1", "d2"}  # agg cells overlap
    bg = np.array([BG / 255], np.float32)
    seen_overlap = False
    for i in range(6):
        sample, ratios = copypaste_image(cells, cfg, (S, S), 1, bg, np.dtype(np.uint8),
                                         np.random.default_rng(i), "cp")
        masks = cells_of(sample)
        assert len(masks) == len(ratios) >= 1
        assert all(0.0 <= r <= 0.2 for r in ratios)
        # recomputed from the written masks, in paste order
        for k in range(1, len(masks)):
            union = masks[:k].any(0)
            new = masks[k]
            assert (new & union).sum() / new.sum() <= 0.2 + 1e-9
            for j in range(k):
                assert (new & masks[j]).sum() / masks[j].sum() <= 0.2 + 1e-9
        seen_overlap |= bool((masks.sum(0) >= 2).any())
        # cells are darker than the empty canvas; far from every cell the canvas is untouched
        assert sample.image[masks.any(0)].mean() < BG - 40
        far = ndi.distance_transform_edt(~masks.any(0)) > 3 * cfg.edge_sigma * S / 512 + 3
        assert far.any() and np.all(sample.image[far] == BG)
    assert seen_overlap  # the bound admits real overlaps, not only separate cells


def test_copypaste_rejects_all_when_no_isolated_cells(tmp_path):
    agg = write_canonical_dataset([flat_sample("agg", [(30, 30), (30, 36)], r=8)], tmp_path / "d")
    with pytest.raises(DataError, match="overlaps no other cell"):
        write_copypaste(agg, tmp_path / "out", n=1, seed=0)
    out = write_copypaste(agg, tmp_path / "out", n=2, seed=0, max_source_overlap=0.9,
                          edge_sigma=4.0, n_cells=[1, 2])
    assert len(CanonicalDataset(out)) == 2


def test_coarse_edge_blur_matches_full_resolution_blur():
    import cv2

    from overlapseg.synth.copypaste import _smooth_mask

    yy, xx = np.mgrid[:220, :200]
    mask = (yy - 110) ** 2 / 60 ** 2 + (xx - 100) ** 2 / 45 ** 2 <= 1
    for sigma in (2.0, 10.0, 20.0):
        ref = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        assert np.abs(_smooth_mask(mask, sigma) - ref).max() < 0.01

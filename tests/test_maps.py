"""Overlap-probability maps v0-v4: invariants of the thesis Sec. 4.3 maps and the dataset writer."""
import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from overlapseg.data.canonical import DataError, Instance, Sample, write_canonical_dataset
from overlapseg.maps.overlap_maps import (VARIANTS, assign_nuclei, overlap_probability_map,
                                          read_map, write_maps)

H = W = 64


def disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def two_cells(gap_cx=44):
    cells = np.stack([disc(32, 18, 12), disc(32, gap_cx, 12)])
    nuclei = np.stack([disc(32, 18, 3), disc(32, gap_cx, 3)])
    return cells, nuclei


@pytest.mark.parametrize("variant", VARIANTS)
def test_range_dtype_determinism(variant):
    cells, nuclei = two_cells(36)  # overlapping pair
    a = overlap_probability_map(cells, nuclei, variant)
    b = overlap_probability_map(cells, nuclei, variant)
    assert a.dtype == np.float32 and a.shape == (H, W)
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.array_equal(a, b)


def test_v4_background_exact_and_maxima_where_cells_closest():
    cells, nuclei = two_cells(44)  # discs x in [6, 30] and [32, 56]: 1-px gap at x = 31
    p = overlap_probability_map(cells, nuclei, "v4")
    bg = ~cells.any(axis=0)
    assert np.all(p[bg] == np.float32(0.1))
    inside = np.where(cells.any(axis=0), p, -1)
    ys, xs = np.nonzero(inside == inside.max())
    # the maxima are the facing border pixels of the two cells, on the line joining them
    assert set(xs.tolist()) <= {30, 32} and set(ys.tolist()) == {32}
    # and values decrease away from the contact point along the cell's axis
    row = p[32, 6:31]
    assert np.all(np.diff(row) > 0)
    assert p[32, 6] < 0.2


def test_v4_overlap_is_one_and_matches_bruteforce_edt():
    cells = np.stack([disc(30, 20, 11), disc(34, 34, 10), disc(15, 50, 6)])
    p = overlap_probability_map(cells, np.zeros((0, H, W), bool), "v4", log_scale=2.0)
    overlap = cells.sum(0) >= 2
    assert overlap.any() and np.all(p[overlap] == 1.0)
    # reference: scipy EDT per cell, second-smallest distance, log scaling, normalised
    d = np.stack([ndi.distance_transform_edt(~c) for c in cells])
    second = np.sort(d, axis=0)[1]
    fg = cells.any(0)
    logd = np.log1p(second[fg] / 2.0)
    ref = np.full((H, W), 0.1)
    ref[fg] = 1 - logd / logd.max()
    np.testing.assert_allclose(p, ref, atol=1e-5)


def test_v4_lone_cell_and_empty_image():
    cells = disc(32, 32, 10)[None]
    p = overlap_probability_map(cells, np.zeros((0, H, W), bool), "v4")
    assert np.all(p[cells[0]] == 0.0) and np.all(p[~cells[0]] == np.float32(0.1))
    empty = overlap_probability_map(np.zeros((0, H, W), bool), np.zeros((0, H, W), bool), "v4")
    assert np.all(empty == np.float32(0.1))


def test_v0_low_at_nucleus_high_at_rim():
    cells, nuclei = two_cells(44)
    p = overlap_probability_map(cells, nuclei, "v0")
    assert p[32, 18] == 0.0 and p[32, 44] == 0.0          # nucleus centres
    assert np.all(p[nuclei.any(0)] == 0.0)
    assert np.all(p[~cells.any(0)] == np.float32(0.1))    # background
    assert p[32, 6] == pytest.approx(1.0)                 # farthest rim point of cell 0
    assert p[32, 10] < p[32, 8] < p[32, 6]                # increases towards the rim


def test_v1_extends_beyond_cells_and_v3_is_max_of_v1_v2():
    cells, nuclei = two_cells(36)
    v1 = overlap_probability_map(cells, nuclei, "v1")
    v2 = overlap_probability_map(cells, nuclei, "v2")
    v3 = overlap_probability_map(cells, nuclei, "v3")
    assert np.all(v1[nuclei.any(0)] == 0.0)
    assert v1[32, 3] > 0.5   # outside cell 0 (rim at x=6) but still under its influence
    assert v1[32, 3] > v1[5, 60]
    np.testing.assert_array_equal(v3, np.maximum(v1, v2))


def test_v2_relaxed_around_overlap():
    cells, nuclei = two_cells(36)
    p = overlap_probability_map(cells, nuclei, "v2", overlap_sigma=4.0)
    overlap = cells.sum(0) >= 2
    assert np.all(p[overlap] == 1.0)
    d = ndi.distance_transform_edt(~overlap)
    near, far = (d > 0) & (d <= 2), d > 20
    assert np.all(p[near] > 0.8) and np.all(p[far] == np.float32(0.1))
    # no overlap at all: background everywhere
    lone = overlap_probability_map(cells[:1], nuclei[:1], "v2")
    assert np.all(lone == np.float32(0.1))


def test_nucleus_assignment_and_errors():
    cells, nuclei = two_cells(44)
    assert assign_nuclei(cells, nuclei[::-1]).tolist() == [1, 0]
    stray = np.concatenate([nuclei, disc(5, 5, 2)[None]])
    assert assign_nuclei(cells, stray).tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="variant"):
        overlap_probability_map(cells, nuclei, "v9")
    with pytest.raises(ValueError, match="nuclei"):
        overlap_probability_map(cells, nuclei[:, :10], "v0")


def _dataset(tmp_path):
    cells, nuclei = two_cells(36)
    image = np.full((H, W), 200, np.uint8)
    image[cells.any(0)] = 120
    inst = [Instance(cells[0], "cytoplasm"), Instance(cells[1], "cytoplasm"),
            Instance(nuclei[0], "nucleus", 0), Instance(nuclei[1], "nucleus", 1)]
    lone = [Instance(cells[0], "cytoplasm")]
    return write_canonical_dataset([Sample("a", image, inst), Sample("b", image, lone)],
                                   tmp_path / "data")


def test_write_maps(tmp_path):
    data = _dataset(tmp_path)
    out = write_maps(data, "v4", tmp_path / "maps" / "v4", background=0.2)
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz", "params.json"]
    prob, overlap = read_map(out / "a.npz")
    cells, nuclei = two_cells(36)
    assert prob.dtype == np.float32 and overlap.dtype == np.uint8
    np.testing.assert_array_equal(overlap, (cells.sum(0) >= 2).astype(np.uint8))
    np.testing.assert_array_equal(prob, overlap_probability_map(cells, nuclei, "v4", background=0.2))
    assert json.loads((out / "params.json").read_text())["params"]["background"] == 0.2
    # subset by names, and bad inputs name the problem
    only = write_maps(data, "v0", tmp_path / "v0", names=["b"])
    assert sorted(p.name for p in only.iterdir()) == ["b.npz", "params.json"]
    with pytest.raises(DataError, match="not in dataset"):
        write_maps(data, "v0", tmp_path / "x", names=["zzz"])
    with pytest.raises(ValueError, match="unknown overlap-map parameters"):
        write_maps(data, "v0", tmp_path / "x", sigma=3)
    assert not (tmp_path / "x").exists()
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.npz"):
        read_map(tmp_path / "bad.npz")


def test_v4_max_distance_window_is_exact_within_margin():
    cells = np.stack([disc(30, 20, 11), disc(34, 34, 10), disc(12, 52, 6)])
    none = np.zeros((0, H, W), bool)
    exact = overlap_probability_map(cells, none, "v4")
    wide = overlap_probability_map(cells, none, "v4", max_distance=200.0)
    np.testing.assert_array_equal(exact, wide)  # margin beyond every distance: same map
    capped = overlap_probability_map(cells, none, "v4", max_distance=5.0)
    d = np.sort(np.stack([ndi.distance_transform_edt(~c) for c in cells]), axis=0)[1]
    fg = cells.any(0)
    assert np.all(capped[fg & (d >= 5)] == 0.0)      # beyond the cap: no overlap likelihood
    assert np.all(capped[fg & (d < 5)] > 0.0)
    assert np.all(capped[~fg] == np.float32(0.1))

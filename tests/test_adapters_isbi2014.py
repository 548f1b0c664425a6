"""isbi2014 adapter: both archive layouts, v5 and v7.3, nucleus linking, bad inputs."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.io import savemat

from fixtures_isbi import _cell_array, write_isbi_fixture
from overlapseg.data.adapters import isbi2014
from overlapseg.data.adapters.isbi2014 import link_nuclei, nucleus_instances
from overlapseg.data.canonical import CanonicalDataset, DataError
from overlapseg.data.ingest import ingest


def _check_against_truth(samples, info, subsets=("train", "test")):
    truth = [(s, t) for s in subsets for t in info[s]]
    assert [s.name for s in samples] == [f"{sub}_{i:03d}" for sub in subsets
                                         for i in range(len(info[sub]))]
    for sample, (subset, t) in zip(samples, truth):
        assert sample.subset == subset
        np.testing.assert_array_equal(sample.image, t["image"])
        cells = [i for i in sample.instances if i.category == "cytoplasm"]
        nuclei = [i for i in sample.instances if i.category == "nucleus"]
        assert len(cells) == t["cells"] and len(nuclei) == t["nuclei"]
        for got, want in zip(cells, t["cell_masks"]):
            np.testing.assert_array_equal(got.mask, want)
        # every fixture nucleus sits at its own cell's centre: it must be linked to a cell
        # that contains it, and recovered exactly
        for nuc in nuclei:
            assert nuc.parent is not None
            assert sample.instances[nuc.parent].mask[nuc.mask].mean() > 0.5
            assert any(np.array_equal(nuc.mask, w) for w in t["nuclei_masks"])


@pytest.mark.parametrize("layout", ["train45test90", "dataset_zip"])
@pytest.mark.parametrize("v73", [False, True])
def test_reads_every_layout_and_version(tmp_path, layout, v73):
    info = write_isbi_fixture(tmp_path, n_images=2, size=48, cells=(2, 3), seed=3,
                              layout=layout, v73=v73)
    samples = list(isbi2014.read(tmp_path))
    _check_against_truth(samples, info)
    prefix = "Synthetic/" if layout == "dataset_zip" else ""
    assert samples[0].source.startswith(prefix)


def test_accepts_the_folder_or_its_parent(tmp_path):
    info = write_isbi_fixture(tmp_path / "Train45Test90", n_images=1, size=48)
    assert len(list(isbi2014.read(tmp_path))) == 2  # parent of the extracted folder
    info = write_isbi_fixture(tmp_path / "ds", n_images=1, size=48, layout="dataset_zip")
    samples = list(isbi2014.read(tmp_path / "ds" / "Synthetic"))  # the folder holding the files
    _check_against_truth(samples, info)


def test_two_layouts_need_a_choice(tmp_path):
    write_isbi_fixture(tmp_path / "Train45Test90", n_images=1, size=48)
    write_isbi_fixture(tmp_path / "Dataset", n_images=2, size=48, layout="dataset_zip")
    with pytest.raises(DataError, match="several ISBI 2014 layouts found.*set option layout"):
        list(isbi2014.read(tmp_path))
    samples = list(isbi2014.read(tmp_path, layout="Dataset.zip"))
    assert len(samples) == 4 and samples[0].source.startswith("Dataset/Synthetic/")
    with pytest.raises(DataError, match="option layout must be"):
        list(isbi2014.read(tmp_path, layout="zip"))


def test_subset_option(tmp_path):
    info = write_isbi_fixture(tmp_path, n_images=2, size=48)
    test_only = list(isbi2014.read(tmp_path, subset="test"))
    assert [s.name for s in test_only] == ["test_000", "test_001"]
    _check_against_truth(test_only, info, subsets=("test",))
    assert {s.subset for s in isbi2014.read(tmp_path, subset="train")} == {"train"}
    with pytest.raises(DataError, match="subset must be one of"):
        list(isbi2014.read(tmp_path, subset="val"))


def test_train_only_folder_reads_train_but_refuses_test(tmp_path):
    write_isbi_fixture(tmp_path, n_images=2, size=48, subsets=("train",))
    assert [s.subset for s in isbi2014.read(tmp_path)] == ["train", "train"]
    with pytest.raises(DataError, match=r"isbi_test90\.mat.*subset 'test' requested"):
        list(isbi2014.read(tmp_path, subset="test"))


def test_ingest_writes_canonical_dataset_with_parents(tmp_path):
    info = write_isbi_fixture(tmp_path / "raw", n_images=2, size=48, v73=True)
    ingest("isbi2014", tmp_path / "raw", tmp_path / "data")
    ds = CanonicalDataset(tmp_path / "data")
    assert ds.names == ["train_000", "train_001", "test_000", "test_001"]
    anns = ds.data["annotations"]
    by_id = {a["id"]: a for a in anns}
    nuclei = [a for a in anns if a["category_id"] == 2]
    assert len(nuclei) == sum(t["nuclei"] for s in ("train", "test") for t in info[s])
    assert all(by_id[a["parent_id"]]["category_id"] == 1 for a in nuclei)
    assert {img["subset"] for img in ds.data["images"]} == {"train", "test"}


# ----------------------------------------------------------------------------- linking
def test_link_nuclei_largest_overlap_then_smallest_cell():
    big = np.zeros((20, 20), bool); big[0:20, 0:12] = True
    small = np.zeros((20, 20), bool); small[5:15, 8:18] = True
    nuc_mostly_small = np.zeros((20, 20), bool); nuc_mostly_small[8:11, 10:14] = True  # 6 vs 12 px
    nuc_in_both = np.zeros((20, 20), bool); nuc_in_both[8:11, 8:11] = True  # fully in both: tie
    nuc_outside = np.zeros((20, 20), bool); nuc_outside[17:19, 15:18] = True
    assert link_nuclei([nuc_mostly_small, nuc_in_both, nuc_outside], [big, small]) == [1, 1, None]
    assert link_nuclei([nuc_in_both], [small, big]) == [0]  # tie goes to the smaller, any order
    big_only = np.zeros((20, 20), bool); big_only[1:3, 1:3] = True
    assert link_nuclei([big_only], [big, small]) == [0]


def test_nuclei_components_are_8_connected():
    mask = np.zeros((6, 6), np.uint8)
    mask[0:2, 0:2] = 1
    mask[2:4, 2:4] = 1  # touches the first one diagonally: same nucleus
    mask[5, 5] = 1
    parts = nucleus_instances(mask)
    assert len(parts) == 2 and sorted(p.sum() for p in parts) == [1, 8]


# ----------------------------------------------------------------------------- bad inputs
def _write_gt(path, cyto_items, nuclei, key="train"):
    savemat(str(path), {f"{key}_Cytoplasm": _cell_array([_cell_array(c) for c in cyto_items]),
                        f"{key}_Nuclei": _cell_array(nuclei)})


def _write_images(path, images, key="ISBI_Train"):
    savemat(str(path), {key: _cell_array(images)})


def test_incomplete_layout_names_missing_file(tmp_path):
    write_isbi_fixture(tmp_path, n_images=1, size=48, subsets=("train",))
    (tmp_path / "isbi_train.mat").unlink()  # GT without images
    with pytest.raises(DataError, match=r"isbi_train\.mat: incomplete Train45Test90 layout: "
                                        r"missing isbi_train\.mat \(found isbi_train_GT\.mat\)"):
        list(isbi2014.read(tmp_path))
    write_isbi_fixture(tmp_path / "z", n_images=1, size=48, layout="dataset_zip")
    (tmp_path / "z" / "Synthetic" / "testset_GT.mat").unlink()
    with pytest.raises(DataError, match=r"testset_GT\.mat: incomplete Dataset\.zip layout"):
        list(isbi2014.read(tmp_path / "z"))


def test_no_isbi_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no ISBI 2014 files found"):
        list(isbi2014.read(tmp_path))


def test_missing_key_names_key_and_file(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    _write_images(tmp_path / "isbi_train.mat", [img], key="images")
    _write_gt(tmp_path / "isbi_train_GT.mat", [[np.ones((8, 8), np.uint8)]], [img])
    with pytest.raises(DataError, match=r"isbi_train\.mat: missing variable\(s\) 'ISBI_Train'"):
        list(isbi2014.read(tmp_path))
    _write_images(tmp_path / "isbi_train.mat", [img])
    savemat(str(tmp_path / "isbi_train_GT.mat"), {"train_Cytoplasm": _cell_array([_cell_array(
        [np.ones((8, 8), np.uint8)])])})
    with pytest.raises(DataError, match=r"isbi_train_GT\.mat: missing variable\(s\) 'train_Nuclei'"):
        list(isbi2014.read(tmp_path))


def test_empty_cell_mask_error_or_skip(tmp_path, caplog):
    img = np.full((8, 8), 100, np.uint8)
    cell = np.zeros((8, 8), np.uint8); cell[2:6, 2:6] = 1
    _write_images(tmp_path / "isbi_train.mat", [img, img])
    _write_gt(tmp_path / "isbi_train_GT.mat", [[cell], [cell, np.zeros((8, 8), np.uint8)]],
              [np.zeros((8, 8), np.uint8)] * 2)
    with pytest.raises(DataError, match=r"isbi_train_GT\.mat: train_Cytoplasm image 1 cell 1: "
                                        r"empty mask"):
        list(isbi2014.read(tmp_path))
    with caplog.at_level(logging.WARNING):
        samples = list(isbi2014.read(tmp_path, skip_empty=True))
    assert [len(s.instances) for s in samples] == [1, 1]
    assert "image 1 cell 1: empty mask dropped" in caplog.text


def test_duplicate_cell_mask_error_or_skip(tmp_path):
    img = np.full((8, 8), 100, np.uint8)
    cell = np.zeros((8, 8), np.uint8); cell[2:6, 2:6] = 1
    _write_images(tmp_path / "isbi_train.mat", [img])
    _write_gt(tmp_path / "isbi_train_GT.mat", [[cell, cell]], [np.zeros((8, 8), np.uint8)])
    with pytest.raises(DataError, match="image 0 cell 1: duplicate"):
        list(isbi2014.read(tmp_path))
    assert len(list(isbi2014.read(tmp_path, skip_duplicates=True))[0].instances) == 1


def test_mask_size_mismatch_and_count_mismatch(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    _write_images(tmp_path / "isbi_train.mat", [img])
    _write_gt(tmp_path / "isbi_train_GT.mat", [[np.ones((8, 9), np.uint8)]], [img])
    with pytest.raises(DataError, match=r"isbi_train_GT\.mat: train_Cytoplasm image 0 cell 0: "
                                        r"mask size \(8, 9\) does not match image size \(8, 8\)"):
        list(isbi2014.read(tmp_path))
    _write_gt(tmp_path / "isbi_train_GT.mat", [[np.ones((8, 8), np.uint8)]], [np.zeros((7, 8))])
    with pytest.raises(DataError, match=r"train_Nuclei image 0: mask size \(7, 8\)"):
        list(isbi2014.read(tmp_path))
    _write_images(tmp_path / "isbi_train.mat", [img, img])
    with pytest.raises(DataError, match=r"isbi_train_GT\.mat: .*holds 2 images"):
        list(isbi2014.read(tmp_path))

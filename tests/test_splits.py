import pytest

from fixtures_isbi import write_isbi_fixture
from overlapseg.data.canonical import CanonicalDataset, DataError
from overlapseg.data.ingest import ingest
from overlapseg.data.splits import make_splits, split_names

NAMES = [f"img_{i:02d}" for i in range(40)]
STRATA = {n: 2 + i % 4 for i, n in enumerate(NAMES)}  # 10 images each with 2, 3, 4, 5 cells


def test_deterministic_disjoint_complete():
    a = split_names(NAMES, STRATA, seed=7, val_fraction=0.2, test_fraction=0.2)
    assert a == split_names(NAMES, STRATA, seed=7, val_fraction=0.2, test_fraction=0.2)
    assert a != split_names(NAMES, STRATA, seed=8, val_fraction=0.2, test_fraction=0.2)
    assert sorted(a["train"] + a["val"] + a["test"]) == NAMES
    assert len(a["test"]) == 8 and len(a["val"]) == 8 and len(a["train"]) == 24


def test_stratified_by_cells_per_image():
    s = split_names(NAMES, STRATA, seed=0, val_fraction=0.2, test_fraction=0.2)
    for part in ("train", "val", "test"):
        counts = [STRATA[n] for n in s[part]]
        assert {2, 3, 4, 5} <= set(counts), part  # every clump size in every split
    test_counts = sorted(STRATA[n] for n in s["test"])
    assert test_counts == [2, 2, 3, 3, 4, 4, 5, 5]


def test_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        split_names(NAMES, STRATA, 0, 0.6, 0.5)


def test_presets(tmp_path):
    write_isbi_fixture(tmp_path / "raw", n_images=3, size=64)
    ingest("isbi2014", tmp_path / "raw", tmp_path / "ds")
    ds = CanonicalDataset(tmp_path / "ds")
    only = make_splits(ds, preset="test-only")
    assert only["train"] == [] and sorted(only["test"]) == sorted(ds.names)
    keep = make_splits(ds, preset="subsets", val_fraction=0.34)
    assert all(n.startswith("test") for n in keep["test"]) and len(keep["test"]) == 3
    assert all(n.startswith("train") for n in keep["train"] + keep["val"])
    with pytest.raises(DataError, match="900-image test set"):
        make_splits(ds, preset="isbi2014-official")
    with pytest.raises(ValueError, match="unknown split preset"):
        make_splits(ds, preset="nope")


def test_official_protocol(tmp_path):
    write_isbi_fixture(tmp_path / "raw", n_images=95, size=32, cells=(1, 1), layout="dataset_zip")
    ingest("isbi2014", tmp_path / "raw", tmp_path / "ds")
    s = make_splits(CanonicalDataset(tmp_path / "ds"), preset="isbi2014-official")
    assert len(s["train"]) == 95 and len(s["val"]) == 90 and len(s["test"]) == 5
    assert s["val"] == [f"test_{i:03d}" for i in range(90)]

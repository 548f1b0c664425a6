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


def test_auto_picks_the_protocol_the_data_allows_and_fractions_never_pool_silently(tmp_path):
    """issue 26: with the official test subset present a fraction split is refused (it would
    train on official test images); `auto` uses the official protocol, `pooled` is the opt-in."""
    write_isbi_fixture(tmp_path / "raw", n_images=95, size=32, cells=(1, 1), layout="dataset_zip")
    ingest("isbi2014", tmp_path / "raw", tmp_path / "ds")
    ds = CanonicalDataset(tmp_path / "ds")
    auto = make_splits(ds, preset="auto")
    assert auto["protocol"] == "isbi2014-official (auto)"
    assert (len(auto["train"]), len(auto["val"]), len(auto["test"])) == (95, 90, 5)
    with pytest.raises(DataError, match="would train on them; use preset: auto"):
        make_splits(ds, preset=None)
    pooled = make_splits(ds, preset="pooled", val_fraction=0.1, test_fraction=0.3)
    assert pooled["protocol"] == "pooled"
    assert any(n.startswith("test") for n in pooled["train"])  # what the opt-in says it does

    write_isbi_fixture(tmp_path / "small", n_images=3, size=64)  # Train45Test90-like: 3 test images
    ingest("isbi2014", tmp_path / "small", tmp_path / "small_ds")
    small = make_splits(CanonicalDataset(tmp_path / "small_ds"), preset="auto", val_fraction=0.34)
    assert small["protocol"] == "subsets (auto)" and all(n.startswith("test") for n in small["test"])


def test_auto_on_data_without_a_test_subset_is_a_fraction_split(tmp_path):
    write_isbi_fixture(tmp_path / "raw", n_images=6, size=64)
    ingest("isbi2014", tmp_path / "raw", tmp_path / "ds", subset="train")
    s = make_splits(CanonicalDataset(tmp_path / "ds"), preset="auto", val_fraction=0.0, test_fraction=0.34)
    assert s["protocol"] == "fractions (auto)" and len(s["test"]) == 2

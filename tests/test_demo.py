import numpy as np
from overlapseg.data.canonical import CanonicalDataset
from overlapseg.data.demo import DemoConfig, render_dataset, write_demo_isbi
from overlapseg.data.ingest import ingest

CFG = DemoConfig(n_images=4, size=96, min_cells=2, max_cells=4, seed=3)


def test_render_is_deterministic_from_seed():
    a, b = render_dataset(CFG), render_dataset(CFG)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.cells, y.cells)
    other = render_dataset(DemoConfig(**{**CFG.__dict__, "seed": 4}))
    assert not np.array_equal(a[0].image, other[0].image)


def test_cells_nuclei_and_overlaps():
    for r in render_dataset(CFG):
        assert CFG.min_cells <= len(r.cells) <= CFG.max_cells
        assert r.image.dtype == np.uint8 and r.image.shape == (96, 96)
        # every nucleus lies inside its own cell
        assert all(not (n & ~c).any() and n.any() for c, n in zip(r.cells, r.nuclei))
        # cells stay whole inside the frame
        assert not r.cells[:, 0].any() and not r.cells[:, -1].any()


def test_overlap_regions_are_darker_beer_lambert():
    darker = []
    for r in render_dataset(DemoConfig(n_images=6, size=128, seed=1)):
        count = r.cells.sum(0)
        nuclei = r.nuclei.any(0)
        single, double = (count == 1) & ~nuclei, (count >= 2) & ~nuclei
        if double.sum() > 20:
            darker.append(r.image[double].mean() < r.image[single].mean())
    assert darker and all(darker)


def test_demo_goes_through_isbi_ingestion(tmp_path):
    write_demo_isbi(tmp_path / "raw", CFG)
    ingest("isbi2014", tmp_path / "raw", tmp_path / "data")
    ds = CanonicalDataset(tmp_path / "data")
    rendered = render_dataset(CFG)
    assert len(ds) == CFG.n_images
    for name, r in zip(ds.names, rendered):
        assert np.array_equal(ds.load_image(name), r.image)
        cells = ds.masks(name, "cytoplasm")
        assert np.array_equal(cells, r.cells)
        nuclei = ds.annotations(name, "nucleus")
        assert len(nuclei) == len(r.cells)
        assert all(a["parent_id"] is not None for a in nuclei)


def test_overlap_range_respected():
    cfg = DemoConfig(n_images=5, size=128, min_cells=3, max_cells=3, overlap=(0.0, 0.05), seed=2)
    for r in render_dataset(cfg):
        for k in range(1, len(r.cells)):
            covered = (r.cells[k] & r.cells[:k].any(0)).sum() / r.cells[k].sum()
            assert covered <= 0.05 + 1e-9


def test_cli_demo(tmp_path):
    from overlapseg.cli import main

    assert main(["demo", "--out", str(tmp_path / "raw"), "--n", "2", "--size", "96"]) == 0
    assert (tmp_path / "raw" / "isbi_train.mat").is_file()
    assert (tmp_path / "raw" / "isbi_train_GT.mat").is_file()


def test_raw_files_are_byte_identical_across_writes(tmp_path, monkeypatch):
    """savemat stamps the creation time into the header; the demo's raw files must not differ
    between two renders (their sha256 is part of every audit chain)."""
    import time

    write_demo_isbi(tmp_path / "a", CFG)
    later = time.time() + 3600  # a header written an hour later
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "asctime", lambda *a: time.ctime(later))
    write_demo_isbi(tmp_path / "b", CFG)
    for name in ("isbi_train.mat", "isbi_train_GT.mat"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

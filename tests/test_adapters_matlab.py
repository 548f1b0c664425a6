"""MATLAB reading: version detection from the header, v5 cells, v7.3 cells via #refs#."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from overlapseg.data.adapters.matlab import MatFile, load_mat, mat_version, save_mat_v73
from overlapseg.data.canonical import DataError


def _matlab_v73_by_hand(path, image: np.ndarray, masks: list[np.ndarray]) -> None:
    """Write ``imgs = {image}`` (1x1 cell) and ``cyto = {{m1; m2}}`` as MATLAB 7.3 does:
    HDF5 with a 512-byte text userblock, every array transposed, cells as reference
    datasets pointing into ``#refs#``. Independent of save_mat_v73 on purpose."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        img = refs.create_dataset("a", data=image.T)
        img.attrs["MATLAB_class"] = np.bytes_("uint8")
        inner = np.empty((1, len(masks)), dtype=h5py.ref_dtype)  # k x 1 cell, transposed
        for k, m in enumerate(masks):
            ds = refs.create_dataset(f"m{k}", data=m.astype(np.uint8).T)
            ds.attrs["MATLAB_class"] = np.bytes_("logical")
            inner[0, k] = ds.ref
        inner_ds = refs.create_dataset("b", data=inner)
        inner_ds.attrs["MATLAB_class"] = np.bytes_("cell")
        outer = f.create_dataset("imgs", data=np.array([[img.ref]], dtype=h5py.ref_dtype))
        outer.attrs["MATLAB_class"] = np.bytes_("cell")
        cyto = f.create_dataset("cyto", data=np.array([[inner_ds.ref]], dtype=h5py.ref_dtype))
        cyto.attrs["MATLAB_class"] = np.bytes_("cell")
        num = f.create_dataset("CellNum", data=np.array([[len(masks)]], dtype=np.double))
        num.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116)
                + b"\0" * 8 + b"\x00\x02IM")


def test_v73_written_like_matlab_reads_in_matlab_orientation(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (5, 7), dtype=np.uint8)  # non-square: catches missing transpose
    masks = [rng.random((5, 7)) > 0.5, rng.random((5, 7)) > 0.5]
    path = tmp_path / "named_like_v5.mat"
    _matlab_v73_by_hand(path, image, masks)
    assert mat_version(path) == "7.3"
    with MatFile(path) as mat:
        assert sorted(mat.keys()) == ["CellNum", "cyto", "imgs"]
        imgs = mat.cell("imgs")
        assert len(imgs) == 1
        np.testing.assert_array_equal(imgs[0], image)
        cells = mat.cell("cyto")[0]
        assert cells.dtype == object and cells.shape == (2, 1)
        for got, want in zip(cells.ravel(), masks):
            assert got.dtype == bool
            np.testing.assert_array_equal(got, want)
        assert mat.array("CellNum").item() == 2


def test_v5_and_v73_give_the_same_values(tmp_path):
    rng = np.random.default_rng(1)
    cells = np.empty((2, 1), dtype=object)
    cells[0, 0] = rng.integers(0, 9, (3, 4), dtype=np.uint8)
    inner = np.empty((3, 1), dtype=object)
    for k in range(3):
        inner[k, 0] = (rng.random((3, 4)) > 0.5).astype(np.uint8)
    cells[1, 0] = inner
    variables = {"c": cells, "x": np.arange(6, dtype=np.double).reshape(2, 3)}
    savemat(str(tmp_path / "v5.mat"), variables)
    save_mat_v73(tmp_path / "v73.mat", variables)
    assert mat_version(tmp_path / "v5.mat") == "5"
    assert mat_version(tmp_path / "v73.mat") == "7.3"
    a, b = load_mat(tmp_path / "v5.mat", ["c", "x"]), load_mat(tmp_path / "v73.mat", ["c", "x"])
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["c"].shape == b["c"].shape == (2, 1)
    np.testing.assert_array_equal(a["c"][0, 0], b["c"][0, 0])
    for k in range(3):
        np.testing.assert_array_equal(a["c"][1, 0][k, 0], b["c"][1, 0][k, 0])


def test_missing_key_names_key_and_file(tmp_path):
    savemat(str(tmp_path / "gt.mat"), {"train_Nuclei": np.zeros((1, 1))})
    with pytest.raises(DataError, match=r"gt\.mat.*'train_Cytoplasm'.*train_Nuclei"):
        load_mat(tmp_path / "gt.mat", ["train_Cytoplasm"])


def test_unreadable_file_is_a_data_error(tmp_path):
    bad = tmp_path / "broken.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 200 + b"garbage")
    with pytest.raises(DataError, match="broken.mat"):
        MatFile(bad)
    fake73 = tmp_path / "fake73.mat"
    fake73.write_bytes(b"MATLAB 7.3 MAT-file".ljust(600, b"\0"))
    with pytest.raises(DataError, match=r"fake73\.mat: unreadable MATLAB v7\.3"):
        MatFile(fake73)
    with pytest.raises(DataError, match="file not found"):
        MatFile(tmp_path / "absent.mat")

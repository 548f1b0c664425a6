"""label-images adapter: PNG and TIFF instance label images, pairing and bad inputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from overlapseg.data.adapters import label_images
from overlapseg.data.canonical import DataError


def _labels():
    lab = np.zeros((20, 30), np.uint16)
    lab[2:6, 2:8] = 3
    lab[10:15, 20:28] = 700  # sparse ids are fine
    lab[16:18, 1:3] = 3  # same id, second part: still one instance
    return lab


def test_png_and_tiff_labels(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((20, 30), 50, np.uint8))
    cv2.imwrite(str(tmp_path / "a_label.png"), _labels())
    tifffile.imwrite(tmp_path / "b.tif", np.full((20, 30), 9, np.uint16))
    tifffile.imwrite(tmp_path / "b_label.tiff", _labels().astype(np.int32))
    samples = list(label_images.read(tmp_path, category="cytoplasm"))
    assert [s.name for s in samples] == ["a", "b"]
    assert samples[1].image.dtype == np.uint16
    for s in samples:
        assert [i.category for i in s.instances] == ["cytoplasm"] * 2
        first, second = (i.mask for i in s.instances)
        np.testing.assert_array_equal(first, _labels() == 3)
        np.testing.assert_array_equal(second, _labels() == 700)


def test_default_category_and_label_folder(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30), np.uint8))
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "a_label.png"), _labels().astype(np.uint8))
    (s,) = label_images.read(tmp_path, labels="masks")
    assert {i.category for i in s.instances} == {"nucleus"} and len(s.instances) == 2


def test_bad_inputs(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 30), np.uint8))
    with pytest.raises(DataError, match=r"a_label\.png: label image missing for a\.png"):
        list(label_images.read(tmp_path))
    cv2.imwrite(str(tmp_path / "a_label.png"), np.zeros((20, 31), np.uint8))
    with pytest.raises(DataError, match=r"a_label\.png: mask size \(20, 31\) does not match "
                                        r"image size \(20, 30\)"):
        list(label_images.read(tmp_path))
    cv2.imwrite(str(tmp_path / "a_label.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match=r"a_label\.png: label image must be single-channel"):
        list(label_images.read(tmp_path))
    tifffile.imwrite(tmp_path / "c_label.tif", np.zeros((20, 30), np.uint8))
    with pytest.raises(DataError, match=r"c\.png: image missing for label image c_label\.tif"):
        list(label_images.read(tmp_path))
    (tmp_path / "c_label.tif").unlink()
    tifffile.imwrite(tmp_path / "a_label.tif", np.full((20, 30), 0.5, np.float32))
    (tmp_path / "a_label.png").unlink()
    with pytest.raises(DataError, match=r"a_label\.tif: label image has non-integer values"):
        list(label_images.read(tmp_path))
    with pytest.raises(DataError, match=r"option category must be one of"):
        list(label_images.read(tmp_path, category="cell"))

"""isbi2014-edf adapter: filled and outline-drawn nuclei, unclosed outlines reported."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from fixtures_isbi import write_edf_fixture
from overlapseg.data.adapters import isbi2014_edf
from overlapseg.data.adapters.isbi2014_edf import foreground, nuclei_from_annotation
from overlapseg.data.canonical import DataError
from overlapseg.utils.io import read_json


def test_outline_filled_and_broken_outline_counted(tmp_path, caplog):
    expected = write_edf_fixture(tmp_path, n_images=2, size=96)
    report: list = []
    with caplog.at_level(logging.WARNING):
        samples = list(isbi2014_edf.read(tmp_path, report=report,
                                         report_file=str(tmp_path / "outlines.json")))
    assert [s.name for s in samples] == ["EDF000", "EDF001"]
    assert {s.subset for s in samples} == {"test"}
    for sample, exp in zip(samples, expected):
        assert sample.image.shape == (96, 96, 3)
        assert all(i.category == "nucleus" and i.parent is None for i in sample.instances)
        masks = [i.mask for i in sample.instances]
        assert len(masks) == exp["instances"]
        # the closed outline comes back as the filled disc cv2 would draw, the filled one as is
        assert any(np.array_equal(m, exp["closed_mask"]) for m in masks)
        assert any(np.array_equal(m, exp["filled_mask"]) for m in masks)
    assert [r["unclosed_outlines"] for r in report] == [1, 1]
    assert [r["closed_outlines"] for r in report] == [1, 1]
    assert [r["filled_regions"] for r in report] == [1, 1]
    assert read_json(tmp_path / "outlines.json")["images"] == report
    assert "EDF000_GT.png: 1 nucleus outline(s) not closed" in caplog.text


def test_touching_outlines_are_separate_nuclei():
    fg = np.zeros((40, 60), np.uint8)
    cv2.circle(fg, (18, 20), 10, 1, 1, cv2.LINE_8)
    cv2.circle(fg, (38, 20), 10, 1, 1, cv2.LINE_8)  # shares outline pixels with the first
    masks, counts = nuclei_from_annotation(fg > 0)
    assert len(masks) == 2 and counts["closed_outlines"] == 2
    assert counts["unclosed_outlines"] == 0
    assert masks[0][20, 18] and masks[1][20, 38] and not masks[0][20, 38]


def test_inverted_drawing_and_pinhole_in_filled_region():
    gt = np.full((40, 40), 255, np.uint8)
    cv2.circle(gt, (20, 20), 8, 0, -1)
    gt[20, 20] = 255  # a one-pixel hole inside a filled nucleus
    masks, counts = nuclei_from_annotation(foreground(gt))
    assert counts == {"filled_regions": 1, "closed_outlines": 0, "unclosed_outlines": 0}
    assert masks[0][20, 20]  # hole filled


def test_incomplete_layout_and_size_mismatch(tmp_path):
    write_edf_fixture(tmp_path, n_images=2, size=48)
    (tmp_path / "EDF" / "EDF001_GT.png").unlink()
    with pytest.raises(DataError, match=r"EDF001_GT\.png: incomplete EDF layout: ground truth "
                                        r"missing for EDF001\.png"):
        list(isbi2014_edf.read(tmp_path))
    (tmp_path / "EDF" / "EDF001.png").unlink()
    (tmp_path / "EDF" / "EDF000.png").unlink()
    with pytest.raises(DataError, match=r"EDF000\.png: incomplete EDF layout: image missing"):
        list(isbi2014_edf.read(tmp_path / "EDF"))
    cv2.imwrite(str(tmp_path / "EDF" / "EDF000.png"), np.zeros((40, 48), np.uint8))
    with pytest.raises(DataError, match=r"EDF000_GT\.png: mask size \(48, 48\) does not match"):
        list(isbi2014_edf.read(tmp_path))


def test_unreadable_image_and_no_files(tmp_path):
    write_edf_fixture(tmp_path, n_images=1, size=48)
    (tmp_path / "EDF" / "EDF000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"EDF000\.png: unreadable image"):
        list(isbi2014_edf.read(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no EDF images found"):
        list(isbi2014_edf.read(empty))

"""`overlapseg ingest` end to end for every registered format."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fixtures_isbi import write_edf_fixture, write_isbi_fixture
from overlapseg import cli
from overlapseg.data.adapters.labelstudio import encode_brush_rle
from overlapseg.data.canonical import CanonicalDataset, encode_mask
from overlapseg.data.ingest import ADAPTERS


@pytest.fixture(autouse=True)
def only_data_commands(monkeypatch):
    # Register just the data subcommands so this test does not depend on other stages.
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ["overlapseg.data.cli"])


def _raw(fmt, root):
    """Write a tiny raw dataset for ``fmt``; return (raw path, options, expected counts)."""
    if fmt == "isbi2014":
        write_isbi_fixture(root, n_images=1, size=48, v73=True)
        return root, ["subset=test"], {"images": 1}
    if fmt == "isbi2014-edf":
        write_edf_fixture(root, n_images=1, size=48)
        return root, ["min_area=4"], {"images": 1, "annotations": 2}
    mask = np.zeros((20, 30), bool)
    mask[4:12, 5:15] = True
    cv2.imwrite(str(root / "img.png"), np.full((20, 30), 80, np.uint8))
    if fmt == "coco":
        (root / "ann.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "img.png", "height": 20, "width": 30}],
            "categories": [{"id": 5, "name": "cell"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5,
                             "segmentation": encode_mask(mask), "iscrowd": 0}]}))
        return root, ["categories={cell: cytoplasm}"], {"images": 1, "annotations": 1}
    if fmt == "labelstudio":
        (root / "export.json").write_text(json.dumps([{"id": 1, "data": {"image": "img.png"},
            "annotations": [{"id": 1, "result": [{"id": "r", "type": "brushlabels",
                "original_width": 30, "original_height": 20,
                "value": {"rle": encode_brush_rle(mask), "brushlabels": ["nucleus"]}}]}]}]))
        return root, [], {"images": 1, "annotations": 1}
    if fmt == "label-images":
        cv2.imwrite(str(root / "img_label.png"), mask.astype(np.uint8) * 4)
        return root, ["category=nucleus"], {"images": 1, "annotations": 1}
    raise AssertionError(f"no fixture for format {fmt}")


@pytest.mark.parametrize("fmt", sorted(ADAPTERS))
def test_cli_ingest_every_format(tmp_path, fmt):
    raw = tmp_path / "raw"
    raw.mkdir()
    raw, options, expected = _raw(fmt, raw)
    argv = ["ingest", "--format", fmt, "--raw", str(raw), "--out", str(tmp_path / "data")]
    for opt in options:
        argv += ["--option", opt]
    assert cli.main(argv) == 0
    ds = CanonicalDataset(tmp_path / "data")
    assert len(ds) == expected["images"]
    if "annotations" in expected:
        assert len(ds.data["annotations"]) == expected["annotations"]
    assert ds.data["info"]["format"] == fmt


def test_cli_bad_input_is_one_error_line_and_no_output(tmp_path, capsys):
    write_isbi_fixture(tmp_path / "raw", n_images=1, size=48, subsets=("train",))
    (tmp_path / "raw" / "isbi_train_GT.mat").unlink()
    code = cli.main(["ingest", "--format", "isbi2014", "--raw", str(tmp_path / "raw"),
                     "--out", str(tmp_path / "data")])
    assert code == 2
    err = capsys.readouterr().err
    assert "isbi_train_GT.mat: incomplete Train45Test90 layout" in err
    assert not (tmp_path / "data").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data")]

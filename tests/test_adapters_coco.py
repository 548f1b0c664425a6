"""coco adapter: polygons and RLE, category mapping, parent ids, round trip, bad inputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from overlapseg.data.adapters import coco
from overlapseg.data.canonical import (CanonicalDataset, DataError, Instance, Sample, encode_mask,
                                       write_canonical_dataset)
from overlapseg.data.ingest import ingest


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _write(tmp_path, images_dir="images", **overrides) -> dict:
    (tmp_path / images_dir).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / images_dir / "a.png"), np.full((30, 40), 120, np.uint8))
    cell = _disc((30, 40), 15, 20, 10)
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": 30, "width": 40}],
        "categories": [{"id": 1, "name": "Cell"}, {"id": 2, "name": "Nuc"}],
        "annotations": [
            {"id": 10, "image_id": 7, "category_id": 1, "segmentation": encode_mask(cell),
             "iscrowd": 0},
            {"id": 11, "image_id": 7, "category_id": 2, "iscrowd": 0, "parent_id": 10,
             "segmentation": [[16.0, 12.0, 24.0, 12.0, 24.0, 18.0, 16.0, 18.0]]},
        ],
    }
    data.update(overrides)
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return data


def test_polygons_rle_mapping_and_parent(tmp_path):
    _write(tmp_path)
    (sample,) = coco.read(tmp_path, categories={"Cell": "cytoplasm", "Nuc": "nucleus"})
    assert sample.name == "a" and sample.source == "instances.json[7]"
    cell, nuc = sample.instances
    assert (cell.category, nuc.category, nuc.parent) == ("cytoplasm", "nucleus", 0)
    np.testing.assert_array_equal(cell.mask, _disc((30, 40), 15, 20, 10))
    assert nuc.mask[12:18, 16:24].all() and nuc.mask.sum() == 48


def test_unknown_category_names_listed(tmp_path):
    _write(tmp_path)
    with pytest.raises(DataError, match=r"instances\.json: unknown category name\(s\) 'Cell', 'Nuc'"):
        list(coco.read(tmp_path))
    with pytest.raises(DataError, match=r"'Nuc -> nucleolus'"):
        list(coco.read(tmp_path, categories={"Cell": "cytoplasm", "Nuc": "nucleolus"}))


def test_dropped_category_clears_parent(tmp_path):
    _write(tmp_path)
    (sample,) = coco.read(tmp_path, categories={"Cell": None, "Nuc": "nucleus"})
    assert [(i.category, i.parent) for i in sample.instances] == [("nucleus", None)]


def test_canonical_dataset_round_trip(tmp_path):
    cell = _disc((20, 20), 10, 10, 6)
    nuc = _disc((20, 20), 10, 10, 2)
    image = np.arange(400, dtype=np.uint16).reshape(20, 20)
    sample = Sample("s1", image, [Instance(cell, "cytoplasm"), Instance(nuc, "nucleus", 0)],
                    subset="train")
    write_canonical_dataset([sample], tmp_path / "d1")
    ingest("coco", tmp_path / "d1", tmp_path / "d2")
    a, b = CanonicalDataset(tmp_path / "d1"), CanonicalDataset(tmp_path / "d2")
    assert b.names == ["s1"] and b.data["images"][0]["subset"] == "train"
    np.testing.assert_array_equal(a.load_image("s1"), b.load_image("s1"))
    np.testing.assert_array_equal(a.masks("s1"), b.masks("s1"))
    assert [x["parent_id"] for x in b.data["annotations"]] == [None, 1]


def test_bad_inputs_name_file_and_problem(tmp_path):
    base = _write(tmp_path)
    cats = {"Cell": "cytoplasm", "Nuc": "nucleus"}
    cases = [
        ({"annotations": base["annotations"] + [dict(base["annotations"][0])]},
         r"instances\.json: duplicate annotation id\(s\): 10"),
        ({"images": base["images"] * 2}, r"instances\.json: duplicate image id\(s\): 7"),
        ({"images": [{**base["images"][0], "height": 31}]},
         r"a\.png: image size \(30, 40\) does not match instances\.json"),
        ({"annotations": [{**base["annotations"][0], "image_id": 99}]},
         r"annotation 10 refers to unknown image id 99"),
        ({"annotations": [{**base["annotations"][0],
                           "segmentation": encode_mask(np.zeros((30, 40), bool))}]},
         r"instances\.json: annotation 10 \(image a\.png\): empty mask"),
        ({"annotations": [{**base["annotations"][1], "parent_id": 55}]},
         r"parent_id 55 is not an instance of image 7"),
        ({"annotations": [{**base["annotations"][0], "category_id": 3}]},
         r"undeclared category id\(s\) \[3\]"),
        ({"images": [{**base["images"][0], "file_name": "missing.png"}]},
         r"images/missing\.png: image referenced by instances\.json not found"),
    ]
    for override, message in cases:
        _write(tmp_path, **override)
        with pytest.raises(DataError, match=message):
            list(coco.read(tmp_path, categories=cats))
    _write(tmp_path)
    (tmp_path / "images" / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"a\.png: unreadable image"):
        list(coco.read(tmp_path, categories=cats))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataError, match="several \\*.json files"):
        list(coco.read(tmp_path))
    with pytest.raises(DataError, match=r"other\.json: missing COCO key 'images'"):
        list(coco.read(tmp_path, annotations="other.json"))

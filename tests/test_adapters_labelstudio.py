"""labelstudio adapter: brush RLE decoding, polygons in percent, relations, bad inputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from overlapseg.data.adapters import labelstudio
from overlapseg.data.adapters.labelstudio import brush_mask, decode_brush_rle, encode_brush_rle
from overlapseg.data.canonical import DataError


def _pack(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def test_decode_hand_built_stream_with_literal_and_repeated_runs():
    # 6 values, 8-bit words, run-length fields of 3, 3, 3, 3 bits:
    # repeated run of 3 x 255 (flag 1, field 0, length-1 = 2), then a literal run of
    # 3 words 1, 2, 3 (flag 0, field 1, length-1 = 2).
    bits = (f"{6:032b}" + f"{7:05b}" + f"{2:04b}" * 4
            + "1" + "00" + "010" + f"{255:08b}"
            + "0" + "01" + "010" + f"{1:08b}{2:08b}{3:08b}")
    np.testing.assert_array_equal(decode_brush_rle(_pack(bits)), [255, 255, 255, 1, 2, 3])


def test_brush_round_trip_uses_alpha_channel():
    rng = np.random.default_rng(0)
    mask = rng.random((13, 17)) > 0.6
    np.testing.assert_array_equal(brush_mask(encode_brush_rle(mask), 13, 17), mask)
    with pytest.raises(ValueError, match="holds 884 values, expected 13x18x4"):
        brush_mask(encode_brush_rle(mask), 13, 18)
    # alpha only: colour channels 0, alpha 255 on the first pixel
    bits = (f"{8:032b}" + f"{7:05b}" + f"{3:04b}" * 4
            + "0" + "00" + "0011" + f"{0:08b}{0:08b}{0:08b}{255:08b}"
            + "1" + "00" + "0011" + f"{0:08b}")
    np.testing.assert_array_equal(brush_mask(_pack(bits), 1, 2), [[True, False]])


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _export(tmp_path, results, image_ref="/data/upload/3/1a2b3c4d-slide.png", extra_tasks=()):
    cv2.imwrite(str(tmp_path / "slide.png"), np.full((40, 50), 90, np.uint8))
    tasks = [{"id": 1, "data": {"image": image_ref},
              "annotations": [{"id": 1, "was_cancelled": True, "result": []},
                              {"id": 2, "result": results}]}, *extra_tasks]
    (tmp_path / "export.json").write_text(json.dumps(tasks))


def _brush(rid, mask, label="Cell"):
    return {"id": rid, "type": "brushlabels", "original_width": mask.shape[1],
            "original_height": mask.shape[0],
            "value": {"format": "rle", "rle": encode_brush_rle(mask), "brushlabels": [label]}}


def _polygon(rid, points, label="Nucleus", w=50, h=40):
    return {"id": rid, "type": "polygonlabels", "original_width": w, "original_height": h,
            "value": {"points": points, "polygonlabels": [label]}}


CATS = {"Cell": "cytoplasm", "Nucleus": "nucleus"}


def test_polygon_brush_geometric_link(tmp_path):
    cell = _disc(40, 50, 20, 25, 12)
    square = [[40.0, 37.5], [60.0, 37.5], [60.0, 62.5], [40.0, 62.5]]  # x 20..30, y 15..25 px
    _export(tmp_path, [_brush("c1", cell), _polygon("n1", square)],
            extra_tasks=[{"id": 2, "data": {"image": "x.png"}, "annotations": []}])
    (sample,) = labelstudio.read(tmp_path, categories=CATS)
    assert sample.name == "slide"
    c, n = sample.instances
    np.testing.assert_array_equal(c.mask, cell)
    assert n.mask[15:25, 20:30].all() and n.mask.sum() == 100
    assert n.parent == 0 and c.parent is None


def test_relation_sets_parent(tmp_path):
    a = _disc(40, 50, 20, 15, 10)
    b = _disc(40, 50, 20, 35, 10)
    nuc = _disc(40, 50, 20, 25, 2)  # on the border of both cells
    relation = {"type": "relation", "from_id": "n", "to_id": "b", "direction": "right"}
    _export(tmp_path, [_brush("a", a), _brush("b", b), _brush("n", nuc, "Nucleus"), relation])
    (sample,) = labelstudio.read(tmp_path, categories=CATS)
    assert sample.instances[2].parent == 1


def test_bad_inputs(tmp_path):
    cell = _disc(40, 50, 20, 25, 12)
    _export(tmp_path, [_brush("c1", cell)], image_ref="/data/upload/3/gone.png")
    with pytest.raises(DataError, match=r"gone\.png: image '/data/upload/3/gone\.png' of "
                                        r"export\.json not found"):
        list(labelstudio.read(tmp_path, categories=CATS))
    _export(tmp_path, [_brush("c1", cell, "Debris")])
    with pytest.raises(DataError, match=r"export\.json: unknown category name\(s\) 'Debris'"):
        list(labelstudio.read(tmp_path, categories=CATS))
    _export(tmp_path, [_brush("c1", cell), _brush("c1", cell)])
    with pytest.raises(DataError, match=r"task 1: duplicate region id\(s\) c1"):
        list(labelstudio.read(tmp_path, categories=CATS))
    _export(tmp_path, [_brush("c1", np.zeros((40, 50), bool))])
    with pytest.raises(DataError, match=r"export\.json: task 1 region c1: empty mask"):
        list(labelstudio.read(tmp_path, categories=CATS))
    assert list(labelstudio.read(tmp_path, categories=CATS, skip_empty=True))[0].instances == []
    _export(tmp_path, [_brush("c1", _disc(30, 50, 15, 25, 5))])
    with pytest.raises(DataError, match=r"task 1 region c1: annotated at size \(30, 50\) but "
                                        r"image slide\.png is \(40, 50\)"):
        list(labelstudio.read(tmp_path, categories=CATS))
    broken = _brush("c1", cell)
    broken["value"]["rle"] = broken["value"]["rle"][:10]
    _export(tmp_path, [broken])
    with pytest.raises(DataError, match=r"task 1 region c1: brush RLE ends early"):
        list(labelstudio.read(tmp_path, categories=CATS))
    _export(tmp_path, [_polygon("p", [[1, 1], [2, 2]])])
    with pytest.raises(DataError, match=r"region p: polygon needs >= 3"):
        list(labelstudio.read(tmp_path, categories=CATS))

"""Dense images (issue 31, items 1 and 3): more than COCO's 100 detections per image, 256 or
more instances of one category, and the pair-proportional matcher/overlap/boundary code
checked against the dense definitions they replace."""
from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from overlapseg.data.canonical import CATEGORIES, encode_crop
from overlapseg.evaluate import evaluate
from overlapseg.evaluate.boundary import boundary_rle, boundary_width, mask_to_boundary
from overlapseg.evaluate.coco_ap import SparseEval, make_coco
from overlapseg.evaluate.matching import pair_table
from overlapseg.evaluate.overlap import overlap_ratios
from overlapseg.evaluate.toy import toy_case


def _grid_case(n: int, size: int = 320, cell: int = 12, nuclei: bool = False) -> dict:
    """COCO gt: ``n`` square cells on a grid (disjoint), optionally one nucleus each."""
    side = size // (cell + 4)
    assert n <= side * side
    anns = []
    for k in range(n):
        y0, x0 = (k // side) * (cell + 4) + 2, (k % side) * (cell + 4) + 2
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                     "segmentation": encode_crop(np.ones((cell, cell), bool), (y0, x0), (size, size))})
        if nuclei:
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 2, "iscrowd": 0,
                         "parent_id": anns[-1]["id"],
                         "segmentation": encode_crop(np.ones((4, 4), bool), (y0 + 4, x0 + 4), (size, size))})
    return {"images": [{"id": 1, "file_name": "tile.png", "height": size, "width": size}],
            "annotations": anns, "categories": CATEGORIES}


def _perfect(gt: dict) -> list[dict]:
    return [{"image_id": 1, "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 1.0}
            for a in gt["annotations"]]


def test_ap_of_200_perfect_predictions_is_one():
    # COCO's default maxDets=100 scored this 0.505 (half the cells never counted)
    gt = _grid_case(200)
    m = evaluate(gt, _perfect(gt), categories=("cytoplasm",))
    assert (m["cytoplasm"]["AP"], m["cytoplasm"]["AP50"], m["cytoplasm"]["AP75"]) == (1.0, 1.0, 1.0)
    assert m["cytoplasm"]["AJI"] == 1.0 and m["cytoplasm"]["F1"] == 1.0
    assert m["params"]["max_detections"] == 200
    assert m["params"]["most_gt_per_image"] == m["params"]["most_predictions_per_image"] == 200


def test_explicit_max_detections_below_the_data_warns(caplog):
    gt = _grid_case(150)
    with caplog.at_level(logging.WARNING, logger="overlapseg.evaluate.context"):
        m = evaluate(gt, _perfect(gt), categories=("cytoplasm",), max_detections=100)
    assert m["params"]["max_detections"] == 100
    assert m["cytoplasm"]["AP"] < 0.7  # 100 of 150 cells counted
    assert any("more than max_detections=100" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="max_detections must be a positive integer"):
        evaluate(gt, _perfect(gt), max_detections=0)


def test_300_instances_of_one_category_evaluate():
    # pycocotools' area() on a list of >= 256 RLEs raised OverflowError
    gt = _grid_case(300, nuclei=True)
    preds = _perfect(gt)
    preds[0]["score"] = 0.2  # one below the score threshold
    m = evaluate(gt, preds)
    assert m["cytoplasm"]["n_gt"] == m["nucleus"]["n_gt"] == 300
    assert m["cytoplasm"]["AP"] == m["nucleus"]["AP"] == 1.0
    assert m["cytoplasm"]["F1"] == pytest.approx(2 * 299 / (2 * 299 + 1))
    assert m["nucleus"]["AJI"] == 1.0


def test_pair_table_of_300_masks_matches_decoded_counts():
    gt, preds = toy_case(seed=3, n_images=1, size=96, n_cells=150, n_pred=300)
    g = [a["segmentation"] for a in gt["annotations"]]
    d = [p["segmentation"] for p in preds]
    assert len(g) >= 256 and len(d) >= 256
    t = pair_table(g, d)
    gm = mask_utils.decode(g).reshape(-1, len(g)).astype(np.int64)
    dm = mask_utils.decode(d).reshape(-1, len(d)).astype(np.int64)
    assert np.array_equal(t.inter, gm.T @ dm)
    assert np.array_equal(t.gt_area, gm.sum(0)) and np.array_equal(t.dt_area, dm.sum(0))


def _coco_pair(seed: int, crowd: bool):
    gt, preds = toy_case(seed=seed, n_images=3, size=128, n_cells=10, n_pred=40)
    if crowd:  # a few crowd regions: matchable many times, COCO's crowd IoU
        for a in gt["annotations"][::7]:
            a["iscrowd"] = 1
    images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in gt["images"]]
    anns = [{**a, "segmentation": {**a["segmentation"], "counts": a["segmentation"]["counts"].encode()}}
            for a in gt["annotations"]]
    dts = []
    for k, p in enumerate(preds):
        rle = {**p["segmentation"], "counts": p["segmentation"]["counts"].encode()}
        dts.append({**p, "id": k + 1, "segmentation": rle, "area": float(mask_utils.area(rle)),
                    "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
    return make_coco(images, CATEGORIES, anns), make_coco(images, CATEGORIES, dts)


@pytest.mark.parametrize("seed,crowd,max_dets", [(0, False, 100), (1, True, 100), (2, True, 7)])
def test_sparse_matching_equals_pycocotools(seed, crowd, max_dets):
    gt, dt = _coco_pair(seed, crowd)
    runs = []
    for cls in (COCOeval, SparseEval):
        ev = cls(copy.deepcopy(gt), copy.deepcopy(dt), "segm")
        ev.params.maxDets = [max_dets]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        runs.append(ev)
    stock, sparse = runs
    assert len(stock.evalImgs) == len(sparse.evalImgs)
    for a, b in zip(stock.evalImgs, sparse.evalImgs):
        assert (a is None) == (b is None)
        if a is not None:
            for key in ("dtIds", "gtIds", "dtScores"):
                assert a[key] == b[key]
            for key in ("dtMatches", "gtMatches", "gtIgnore", "dtIgnore"):
                assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(stock.eval["precision"], sparse.eval["precision"])
    assert np.array_equal(stock.eval["recall"], sparse.eval["recall"])


def _dense_overlap_ratios(cells, nuclei):
    """The full-frame definition the RLE version replaced (issue 3 implementation)."""
    out = {}
    cm = np.moveaxis(mask_utils.decode([a["segmentation"] for a in cells]), -1, 0).astype(bool)
    count = cm.sum(axis=0)
    for a, m in zip(cells, cm):
        out[a["id"]] = float((m & (count >= 2)).sum() / m.sum())
    nm = np.moveaxis(mask_utils.decode([a["segmentation"] for a in nuclei]), -1, 0).astype(bool)
    index = {a["id"]: k for k, a in enumerate(cells)}
    for a, m in zip(nuclei, nm):
        own = index.get(a.get("parent_id"))
        if own is None:
            own = int(np.argmax(cm[:, m].sum(axis=1)))
        others = count[m] - cm[own, m]
        out[a["id"]] = float(np.count_nonzero(others > 0) / m.sum())
    return out


@pytest.mark.parametrize("drop_parents", [False, True])
def test_overlap_ratios_equal_the_dense_definition(drop_parents):
    gt, _ = toy_case(seed=5, n_images=1, size=128, n_cells=25, n_pred=0)
    anns = [{**a, "segmentation": {**a["segmentation"], "counts": a["segmentation"]["counts"].encode()}}
            for a in gt["annotations"]]
    if drop_parents:
        anns = [{**a, "parent_id": None} for a in anns]
    cells = [a for a in anns if a["category_id"] == 1]
    nuclei = [a for a in anns if a["category_id"] == 2]
    got, want = overlap_ratios(cells, nuclei), _dense_overlap_ratios(cells, nuclei)
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], abs=1e-12) for k in want)
    assert any(0 < v < 1 for v in want.values())  # the case has partial overlaps


def test_boundary_rle_equals_the_full_frame_band():
    gt, preds = toy_case(seed=2, n_images=1, size=100, n_cells=8, n_pred=20)
    rles = [a["segmentation"] for a in gt["annotations"]] + [p["segmentation"] for p in preds]
    edge = np.zeros((100, 100), bool)
    edge[90:, :30] = True  # touches the image border: the border counts as background
    rles.append(encode_crop(edge[90:, :30], (90, 0), (100, 100)))
    for rle in rles:
        rle = {**rle, "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}
        want = mask_to_boundary(mask_utils.decode(rle).astype(bool), boundary_width(100, 100, 0.02))
        assert np.array_equal(mask_utils.decode(boundary_rle(rle, 0.02)).astype(bool), want)

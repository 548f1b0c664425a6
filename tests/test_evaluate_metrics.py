"""Hand-computed expectations for the evaluation suite (issue 3 'must show')."""
from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from overlapseg.data.canonical import CATEGORIES, DataError, encode_mask, mask_bbox
from overlapseg.evaluate import evaluate, write_metrics
from overlapseg.evaluate.boundary import boundary_iou, boundary_width, mask_to_boundary
from overlapseg.evaluate.matching import aji, pair_table
from overlapseg.evaluate.overlap import bin_index, overlap_ratios
from overlapseg.evaluate.toy import toy_case


def _gt(masks_by_cat, size=(10, 10), parents=None):
    """COCO gt with one image from {category_id: [bool masks]}."""
    h, w = size
    anns = []
    for cat, masks in masks_by_cat.items():
        for m in masks:
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": cat,
                         "segmentation": encode_mask(m), "area": float(m.sum()),
                         "bbox": mask_bbox(m), "iscrowd": 0,
                         "parent_id": (parents or {}).get(len(anns) + 1)})
    return {"images": [{"id": 1, "name": "a", "file_name": "a.png", "height": h, "width": w}],
            "annotations": anns, "categories": CATEGORIES}


def _pred(m, cat=1, score=0.9, image_id=1):
    return {"image_id": image_id, "category_id": cat, "segmentation": encode_mask(m), "score": score}


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


# ----------------------------------------------------------------------------- boundary IoU
def test_boundary_iou_two_squares_by_hand():
    # 6x6 squares, the prediction shifted one column right, in a 20x20 image.
    g = _box((20, 20), 2, 8, 2, 8)
    p = _box((20, 20), 2, 8, 3, 9)
    # d = 1: each band is the 20-pixel outer ring; shared: top and bottom rows, columns 3..7.
    assert boundary_width(20, 20, 0.02) == 1
    assert mask_to_boundary(g, 1).sum() == 20
    assert boundary_iou(g, p, 0.02) == pytest.approx(10 / 30)
    # d = 2: 32-pixel bands; shared 10 + 10 (top/bottom two rows) + 4 (columns 3 and 7, rows 4-5).
    assert boundary_width(20, 20, 0.07) == 2
    assert boundary_iou(g, p, 0.07) == pytest.approx(24 / 40)


def test_boundary_band_matches_full_image_erosion_and_image_edge():
    import cv2

    rng = np.random.default_rng(1)
    blob = rng.random((40, 50)) > 0.6
    m = cv2.morphologyEx(blob.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)).astype(bool)
    padded = cv2.copyMakeBorder(m.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    full = m & (cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=3)[1:-1, 1:-1] == 0)
    assert np.array_equal(mask_to_boundary(m, 3), full)
    # A mask filling the image has its band along the image edge.
    band = mask_to_boundary(np.ones((6, 6), bool), 1)
    assert band.sum() == 20 and not band[1:-1, 1:-1].any()


def test_boundary_ap_penalises_shifted_contour():
    g = _box((20, 20), 2, 8, 2, 8)
    p = _box((20, 20), 2, 8, 3, 9)  # mask IoU 30/42 = 0.714, boundary IoU 1/3
    r = evaluate(_gt({1: [g]}, (20, 20)), [_pred(p)], categories=("cytoplasm",))
    c = r["cytoplasm"]
    assert c["AP50"] == pytest.approx(1.0) and c["AP75"] == 0.0
    assert c["boundary_AP50"] == 0.0 and c["boundary_AP"] == 0.0
    # Matched at mask IoU 0.5 and 0.7 (0.714), but boundary IoU 1/3 is below every tau >= 0.5.
    assert c["AP_TP_boundary@0.5"] == 0.0 and c["AP_TP_boundary@0.7"] == 0.0
    perfect = evaluate(_gt({1: [g]}, (20, 20)), [_pred(g)], categories=("cytoplasm",))["cytoplasm"]
    assert perfect["boundary_AP"] == pytest.approx(1.0) and perfect["AP_TP_boundary@0.7"] == 1.0


# ----------------------------------------------------------------------------- AJI / F1 / ISBI
def _three_instance_case():
    s = (10, 10)
    gts = [_box(s, 0, 2, 0, 5), _box(s, 4, 6, 0, 5), _box(s, 8, 10, 0, 10)]  # 10, 10, 20 px
    preds = [_box(s, 0, 2, 0, 4),   # 8 px inside G1: IoU 0.8
             _box(s, 4, 7, 0, 5),   # 15 px, covers G2: IoU 10/15
             _box(s, 0, 2, 7, 10)]  # 6 px, touches nothing
    return gts, preds


def test_aji_three_instances_by_hand():
    gts, preds = _three_instance_case()
    table = pair_table([encode_mask(m) for m in gts], [encode_mask(m) for m in preds])
    assert table.inter.tolist() == [[8, 0, 0], [0, 10, 0], [0, 0, 0]]
    # C = 8 + 10; U = 10 + 15 (paired unions) + 20 (G3, unpaired) + 6 (P3, unused) = 51.
    assert aji(table) == pytest.approx(18 / 51)
    r = evaluate(_gt({1: gts}), [_pred(m) for m in preds], categories=("cytoplasm",))["cytoplasm"]
    assert r["AJI"] == pytest.approx(18 / 51)
    assert r["F1"] == pytest.approx(2 / 3)  # TP 2, FP 1, FN 1
    assert r["Dice"] == pytest.approx((16 / 18 + 20 / 25) / 2)


def test_isbi_measures_toy_case():
    gts, preds = _three_instance_case()
    r = evaluate(_gt({1: gts}), [_pred(m) for m in preds], categories=("cytoplasm",),
                 isbi_criterion="dice")["cytoplasm"]
    # Good (Dice > 0.7, the challenge's rule): G1-P1 (Dice 0.889), G2-P2 (0.8); G3 missed.
    assert r["FNo"] == pytest.approx(1 / 3)
    assert r["TPp"] == pytest.approx((8 / 10 + 10 / 10) / 2)
    assert r["FPp"] == pytest.approx((0 / 90 + 5 / 90) / 2)
    assert r["ISBI_Dice"] == pytest.approx((16 / 18 + 20 / 25) / 2)
    # Good (IoU > 0.7, the study default): G1-P1 (IoU 0.8) only; G2-P2 has IoU 10/15 = 0.667.
    r = evaluate(_gt({1: gts}), [_pred(m) for m in preds], categories=("cytoplasm",))["cytoplasm"]
    assert r["FNo"] == pytest.approx(2 / 3)
    assert r["TPp"] == pytest.approx(8 / 10)
    assert r["FPp"] == pytest.approx(0 / 90)
    assert r["ISBI_Dice"] == pytest.approx(16 / 18)


def test_score_threshold_and_pixel_instance_seg_f1():
    gts, preds = _three_instance_case()
    low = [_pred(preds[0]), _pred(preds[1]), _pred(preds[2], score=0.1)]
    r = evaluate(_gt({1: gts}), low, categories=("cytoplasm",))["cytoplasm"]
    assert r["F1"] == pytest.approx(4 / 5)  # P3 below 0.5 is not counted: TP 2, FN 1
    # pixel seg: predicted 23 px, gt 40 px, tp 18 -> 36/63; instance seg: same tp (both matched).
    assert r["pixel_seg_F1"] == pytest.approx(36 / 63)
    assert r["instance_seg_F1"] == pytest.approx(36 / 63)


# ----------------------------------------------------------------------------- COCO AP exactness
def test_ap_equals_pycocotools_exactly():
    gt, preds = toy_case(seed=3, n_images=4, size=96, n_cells=5, n_pred=15)
    r = evaluate(gt, preds)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        dt = coco.loadRes(json.loads(json.dumps(preds)))
        stats = {}
        for name, cid in (("cytoplasm", 1), ("nucleus", 2), ("mean", None)):
            ev = COCOeval(coco, dt, "segm")
            if cid is not None:
                ev.params.catIds = [cid]
            ev.evaluate(); ev.accumulate(); ev.summarize()
            stats[name] = ev.stats
    for name in ("cytoplasm", "nucleus", "mean"):
        ours = [r[name][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR")]
        ref = [None if v == -1 else float(v) for v in stats[name][[0, 1, 2, 3, 4, 5, 8]]]
        assert ours == ref, name
    assert 0 < r["cytoplasm"]["AP"] < 1


def test_evaluate_is_deterministic_and_json_safe(tmp_path):
    gt, preds = toy_case(seed=5)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_metrics(a, evaluate(gt, preds), {"id": "abc123"})
    write_metrics(b, evaluate(gt, preds), {"id": "abc123"})
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    assert data["provenance"]["id"] == "abc123"
    for cat in ("cytoplasm", "nucleus", "mean"):
        for key in ("AP", "boundary_AP", "AJI", "F1", "FNo", "TPp", "FPp"):
            v = data[cat][key]
            assert v is None or 0.0 <= v <= 1.0, (cat, key, v)


# ----------------------------------------------------------------------------- edge cases
def test_empty_predictions_dropped_and_empty_image_handled(caplog):
    s = (10, 10)
    gt = _gt({1: [_box(s, 0, 4, 0, 4)]})
    gt["images"].append({"id": 2, "name": "b", "file_name": "b.png", "height": 10, "width": 10})
    preds = [_pred(_box(s, 0, 4, 0, 4)), _pred(np.zeros(s, bool))]
    with caplog.at_level(logging.WARNING):
        r = evaluate(gt, preds)
    assert "empty masks" in caplog.text
    assert r["params"]["dropped_empty_predictions"] == 1
    assert r["cytoplasm"]["AP"] == pytest.approx(1.0) and r["cytoplasm"]["AJI"] == 1.0
    # No nucleus anywhere: undefined, not 0.
    assert r["nucleus"]["AP"] is None and r["nucleus"]["AJI"] is None and r["nucleus"]["F1"] is None
    assert r["mean"]["AP"] == pytest.approx(1.0)
    none = evaluate(gt, [])
    assert none["cytoplasm"]["AP"] == 0.0 and none["cytoplasm"]["FNo"] == 1.0


def test_bad_inputs_name_the_file(tmp_path):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_gt({1: [_box((10, 10), 0, 4, 0, 4)]})))
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps([{**_pred(_box((10, 10), 0, 4, 0, 4)), "image_id": 7}]))
    with pytest.raises(DataError, match="pred.json.*image_id 7"):
        evaluate(gt_path, pred_path)
    bad = _pred(_box((12, 12), 0, 4, 0, 4))
    pred_path.write_text(json.dumps([bad]))
    with pytest.raises(DataError, match="does not match image size"):
        evaluate(gt_path, pred_path)


# ----------------------------------------------------------------------------- overlap breakdown
def test_overlap_ratios_and_bins_by_hand():
    s = (20, 30)
    a, b, c = _box(s, 0, 10, 0, 10), _box(s, 0, 10, 5, 15), _box(s, 12, 20, 20, 30)
    nuc_a = _box(s, 2, 4, 6, 8)   # inside A, in the part B covers -> 1.0
    nuc_c = _box(s, 14, 16, 22, 24)
    gt = _gt({1: [a, b, c], 2: [nuc_a, nuc_c]}, s, parents={4: 1, 5: 3})
    anns = [{**x, "segmentation": {**x["segmentation"], "counts": x["segmentation"]["counts"].encode()}}
            for x in gt["annotations"]]
    ratios = overlap_ratios(anns[:3], anns[3:])
    assert ratios == {1: 0.5, 2: 0.5, 3: 0.0, 4: 1.0, 5: 0.0}
    bins = ((0.0, 0.1), (0.1, 0.3), (0.3, 1.0))
    assert [bin_index(v, bins) for v in (0.0, 0.1, 0.29, 0.3, 1.0)] == [0, 1, 1, 2, 2]
    # Perfect predictions for A and C only: bin [0.3,1] holds A (found) and B (missed).
    r = evaluate(gt, [_pred(a), _pred(c)], categories=("cytoplasm",))["cytoplasm"]["by_overlap"]
    assert r["[0,0.1)"] == {"AP": pytest.approx(1.0), "AJI": 1.0, "best_IoU": 1.0, "recall50": 1.0, "n": 1}
    assert r["[0.1,0.3)"] == {"AP": None, "AJI": None, "best_IoU": None, "recall50": None, "n": 0}
    assert r["[0.3,1]"]["n"] == 2 and r["[0.3,1]"]["AP"] == pytest.approx(0.5, abs=0.01)
    # AJI (original definition: a prediction may serve several gt): A pairs with a (100/100),
    # B's best overlap is also a (IoU 50/150): C = 100 + 50, U = 100 + 150.
    assert r["[0.3,1]"]["AJI"] == pytest.approx(150 / 250)
    # best IoU of A is 1 (found), of B 50/150 (only a touches it): mean 2/3, recall50 1/2
    assert r["[0.3,1]"]["best_IoU"] == pytest.approx((1 + 50 / 150) / 2)
    assert r["[0.3,1]"]["recall50"] == 0.5


# ----------------------------------------------------------------------------- error analysis
def test_error_analysis_variants():
    s = (20, 20)
    g1, g2 = _box(s, 0, 8, 0, 8), _box(s, 10, 18, 10, 18)
    poor = _box(s, 0, 8, 0, 3)          # IoU 24/64 with g1: a miss at 0.5
    spurious = _box(s, 12, 16, 0, 4)    # touches nothing
    good = _box(s, 10, 18, 10, 17)      # IoU 56/64 with g2
    preds = [_pred(spurious, score=0.95), _pred(poor, score=0.9), _pred(good, score=0.8)]
    r = evaluate(_gt({1: [g1, g2]}, s), preds, categories=("cytoplasm",))["cytoplasm"]
    ea = r["error_analysis"]
    # As predicted: spurious FP, poor FP (IoU 0.375), good TP -> precision 1/3 up to recall 0.5.
    assert r["AP50"] == pytest.approx(51 * (1 / 3) / 101)
    # w/ gt mask: poor -> g1 and good -> g2 become exact; spurious still ranks first, so
    # interpolated precision is 2/3 at every recall and every IoU threshold.
    assert ea["w_gt_mask"]["AP50"] == pytest.approx(2 / 3)
    assert ea["w_gt_mask"]["AP"] == pytest.approx(2 / 3)
    # gt matched (Dice >= 0.5): spurious dropped, poor kept (Dice 48/88 = 0.545) but still a
    # miss at IoU 0.5 -> precision 1/2 up to recall 0.5.
    assert ea["gt_matched"]["AP50"] == pytest.approx(51 * 0.5 / 101)


# ----------------------------------------------------------------------------- pixel metrics
def test_pixel_metrics_from_semantic_npz(tmp_path):
    from overlapseg.data.semantic import semantic_targets

    s = (20, 20)
    a, b = _box(s, 2, 10, 2, 10), _box(s, 6, 14, 6, 14)
    n = _box(s, 3, 5, 3, 5)
    gt = _gt({1: [a, b], 2: [n]}, s)
    target = semantic_targets(np.stack([a, b]), np.stack([n]), 2)
    pred = dict(target)
    pred["overlap"] = np.zeros(s, np.uint8)
    pred["overlap"][6:10, 6:8] = 1  # half of the 4x4 overlap
    np.savez(tmp_path / "a.npz", **pred)
    r = evaluate(gt, [], semantic_dir=tmp_path)["pixel"]
    assert r["cytoplasm"]["F1"] == 1.0 and r["nucleus"]["IoU"] == 1.0
    assert r["overlap"]["precision"] == 1.0 and r["overlap"]["recall"] == 0.5
    assert r["overlap"]["IoU"] == 0.5 and r["overlap"]["accuracy"] == pytest.approx(392 / 400)
    (tmp_path / "a.npz").unlink()
    with pytest.raises(DataError, match="a.npz.*not found"):
        evaluate(gt, [], semantic_dir=tmp_path)


def test_cli_evaluate_writes_metrics_with_provenance(tmp_path):
    import argparse

    from overlapseg.evaluate.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())

    def main(argv):
        args = parser.parse_args(argv)
        return args.func(args) or 0

    gt, preds = toy_case(seed=2, n_images=1, size=64)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    (tmp_path / "prov.json").write_text(json.dumps({"id": "p1"}))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--out", str(out), "--iou-type", "boundary", "--provenance", str(tmp_path / "prov.json")]) == 0
    data = json.loads(out.read_text())
    assert data["provenance"] == {"id": "p1"} and data["params"]["iou_type"] == "boundary"
    # With --iou-type boundary the AP keys are the boundary AP.
    assert data["mean"]["AP"] == data["mean"]["boundary_AP"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        main(["evaluate", "--gt", str(tmp_path / "missing.json"), "--pred", str(tmp_path / "pred.json"),
              "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()

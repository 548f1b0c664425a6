"""Operating score thresholds chosen on the validation split (issue 27): picked where F1 (or
AJI) is highest on validation, recorded in the metrics, applied to AJI/F1/Dice, the
instance-derived semantic maps and the qualitative figure, with a fixed-threshold fallback."""
from __future__ import annotations

import numpy as np
import pytest

from overlapseg.data.canonical import CATEGORIES, encode_mask, mask_bbox
from overlapseg.evaluate import evaluate
from overlapseg.evaluate.thresholds import candidate_thresholds, select_score_thresholds
from overlapseg.evaluate.toy import toy_case
from overlapseg.report.figures import drawn_predictions

S = 64


def disc(cy, cx, r):
    yy, xx = np.mgrid[:S, :S]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def case(name: str, shift: int = 0):
    """Two cells with a nucleus each. Predictions: the exact cells at score 0.3 and two
    spurious cells at 0.2 (a detector with low, badly calibrated scores, as IRNet's
    s_cls x p_correct), the exact nuclei at 0.8 and one spurious nucleus at 0.6."""
    cells = [disc(20, 20 + shift, 10), disc(40, 40 + shift, 10)]
    nuclei = [disc(20, 20 + shift, 3), disc(40, 40 + shift, 3)]
    anns = []
    for cat, masks in ((1, cells), (2, nuclei)):
        for m in masks:
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": cat,
                         "segmentation": encode_mask(m), "area": float(m.sum()),
                         "bbox": mask_bbox(m), "iscrowd": 0})
    gt = {"images": [{"id": 1, "name": name, "file_name": f"{name}.png", "height": S, "width": S}],
          "annotations": anns, "categories": CATEGORIES}
    preds = [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(m), "score": 0.3} for m in cells]
    preds += [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(disc(c, 55, 6)), "score": 0.2}
              for c in (8, 56)]
    preds += [{"image_id": 1, "category_id": 2, "segmentation": encode_mask(m), "score": 0.8} for m in nuclei]
    preds += [{"image_id": 1, "category_id": 2, "segmentation": encode_mask(disc(56, 8, 3)), "score": 0.6}]
    return gt, preds


def test_thresholds_are_chosen_on_validation_and_applied_to_test():
    val_gt, val_pred = case("val", shift=2)
    gt, pred = case("test")
    m = evaluate(gt, pred, score_threshold="validation", val_gt_json=val_gt, val_pred_json=val_pred)
    params = m["params"]
    assert params["score_threshold"] == {"cytoplasm": 0.3, "nucleus": 0.8}
    assert params["threshold_source"] == "validation"
    assert params["threshold_selection"]["criterion"] == "F1"
    assert params["threshold_selection"]["validation"] == {"cytoplasm": 1.0, "nucleus": 1.0}
    # test metrics at the chosen thresholds: every correct instance, no spurious one
    for cat in ("cytoplasm", "nucleus"):
        assert m[cat]["F1"] == 1.0 and m[cat]["AJI"] == 1.0 and m[cat]["Dice"] == 1.0
    assert m["cytoplasm"]["n_pred_above_threshold"] == 2
    # the fixed 0.5 cut, kept as a secondary block, drops every cell and keeps a false nucleus
    fixed = m["at_fixed_threshold"]
    assert fixed["score_threshold"] == 0.5
    assert fixed["cytoplasm"]["F1"] == 0.0 and fixed["cytoplasm"]["AJI"] == 0.0
    assert fixed["nucleus"]["F1"] == pytest.approx(0.8)
    # ranked metrics do not depend on the threshold
    plain = evaluate(gt, pred, score_threshold=0.5)
    assert plain["cytoplasm"]["AP"] == m["cytoplasm"]["AP"]
    assert plain["cytoplasm"]["F1"] == 0.0 and "at_fixed_threshold" not in plain
    assert plain["params"]["threshold_source"] == "fixed"


def test_no_validation_split_falls_back_to_the_fixed_threshold():
    gt, pred = case("test")
    m = evaluate(gt, pred, score_threshold="validation")
    assert m["params"]["score_threshold"] == 0.5
    assert m["params"]["threshold_source"] == "fixed (no validation split)"
    empty_gt = {"images": [], "annotations": [], "categories": CATEGORIES}
    m2 = evaluate(gt, pred, score_threshold="validation", val_gt_json=empty_gt, val_pred_json=[],
                  fixed_threshold=0.25)
    assert m2["params"]["score_threshold"] == 0.25
    assert m2["params"]["threshold_source"] == "fixed (no validation split)"
    assert m2["cytoplasm"]["F1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 0))   # 0.3 kept, 0.2 not
    with pytest.raises(ValueError, match="both"):
        evaluate(gt, pred, score_threshold="validation", val_gt_json=gt)
    with pytest.raises(ValueError, match="validation"):
        evaluate(gt, pred, score_threshold="best")


@pytest.mark.parametrize("criterion", ["F1", "AJI"])
def test_the_chosen_threshold_maximises_the_criterion_on_validation(criterion):
    """Brute force: no candidate threshold gives a higher validation value than the chosen one."""
    gt, preds = toy_case(seed=7, n_images=2, size=64, n_cells=4, n_pred=12)
    sel = select_score_thresholds(gt, preds, criterion=criterion)
    for cat, cid in (("cytoplasm", 1), ("nucleus", 2)):
        scores = [p["score"] for p in preds if p["category_id"] == cid]
        values = {t: evaluate(gt, preds, score_threshold=t)[cat][criterion]
                  for t in candidate_thresholds(scores)}
        best = max(v for v in values.values() if v is not None)
        chosen = sel["score_threshold"][cat]
        assert sel["source"][cat] == "validation"
        assert values[chosen] == pytest.approx(best) == pytest.approx(sel["validation"][cat])
        assert chosen == max(t for t, v in values.items() if v == pytest.approx(best))  # ties: highest
    with pytest.raises(ValueError, match="criterion"):
        select_score_thresholds(gt, preds, criterion="AP")


def test_candidates_are_the_distinct_scores_or_evenly_ranked_ones():
    assert candidate_thresholds([0.3, 0.1, 0.3, 0.2]) == [0.1, 0.2, 0.3]
    many = candidate_thresholds(np.linspace(0, 1, 1001), max_candidates=11)
    assert many == pytest.approx(list(np.linspace(0, 1, 11)))


def test_instance_semantic_maps_follow_the_chosen_threshold():
    val_gt, val_pred = case("val", shift=2)
    gt, pred = case("test")
    m = evaluate(gt, pred, score_threshold="validation", val_gt_json=val_gt, val_pred_json=val_pred,
                 semantic_from_predictions=True, border_width=2)
    assert m["pixel"]["cytoplasm"]["F1"] == 1.0 and m["pixel"]["border"]["F1"] == 1.0
    fixed = evaluate(gt, pred, score_threshold=0.5, semantic_from_predictions=True, border_width=2)
    assert fixed["pixel"]["cytoplasm"]["recall"] == 0.0      # no cell above 0.5
    assert fixed["pixel"]["nucleus"]["precision"] < 1.0      # the spurious nucleus is drawn


def test_the_qualitative_figure_draws_each_category_at_its_threshold():
    _, pred = case("test")
    drawn = drawn_predictions(pred, 1, {"cytoplasm": 0.3, "nucleus": 0.8})
    assert [(a["category_id"], a["score"]) for a in drawn] == [(2, 0.8), (2, 0.8), (1, 0.3), (1, 0.3)]
    assert len(drawn_predictions(pred, 1, 0.5)) == 3
    assert drawn_predictions(pred, 2, 0.0) == []

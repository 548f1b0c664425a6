"""evaluate() is the merge of its metric families (issue 10): each family in METRIC_FAMILIES
contributes its keys, and adding a family is one function plus one list entry."""
from __future__ import annotations

import numpy as np
import pytest

from overlapseg.data.canonical import decode_segmentation
from overlapseg.data.semantic import semantic_targets
from overlapseg.evaluate import evaluate
from overlapseg.evaluate.context import EvalContext
from overlapseg.evaluate.evaluator import METRIC_FAMILIES, METRIC_KEYS, merge_family_outputs
from overlapseg.evaluate.families import DETECTION_KEYS, ISBI_KEYS
from overlapseg.evaluate.matching import DetectionCounts
from overlapseg.evaluate.toy import toy_case

KW = dict(score_threshold=0.4, isbi_criterion="dice", fixed_threshold=0.5)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Toy gt/predictions plus one semantic .npz per image, so every family has output."""
    gt, preds = toy_case(seed=4, n_images=2, size=64, n_cells=4, n_pred=10)
    sem = tmp_path_factory.mktemp("semantic")
    for img in gt["images"]:
        stacks = []
        for cat in (1, 2):
            ms = [decode_segmentation(a["segmentation"], 64, 64) for a in gt["annotations"]
                  if a["image_id"] == img["id"] and a["category_id"] == cat]
            stacks.append(np.stack(ms) if ms else np.zeros((0, 64, 64), bool))
        maps = semantic_targets(stacks[0], stacks[1], 2)
        maps["cytoplasm"] = np.roll(maps["cytoplasm"], 1, axis=1)  # imperfect prediction
        np.savez(sem / f"{img['name']}.npz", **maps)
    return gt, preds, sem


def _context(case):
    gt, preds, sem = case
    return EvalContext.build(gt, preds, semantic_dir=sem, **KW)


def test_every_family_contributes_its_keys(case):
    gt, preds, sem = case
    full = evaluate(gt, preds, semantic_dir=sem, **KW)
    ctx = _context(case)
    cats = list(ctx.categories)
    seen: dict[tuple, str] = {}
    for family in METRIC_FAMILIES:
        out = family(ctx)
        assert out, f"{family.__name__} contributed nothing"
        per_cat = {k: v for k, v in out.items() if k in (*cats, "mean")}
        if per_cat:  # per-category families set the same keys for every category and the mean
            assert set(per_cat) == {*cats, "mean"}, family.__name__
            keys = set(per_cat[cats[0]])
            assert keys and all(set(per_cat[c]) == keys for c in (*cats, "mean")), family.__name__
        for top, value in out.items():
            leaves = [(top, k) for k in value] if top in per_cat else [(top,)]
            for leaf in leaves:
                assert leaf not in seen, f"{leaf} set by {seen[leaf]} and {family.__name__}"
                seen[leaf] = family.__name__
                got = full[leaf[0]] if len(leaf) == 1 else full[leaf[0]][leaf[1]]
                want = value if len(leaf) == 1 else value[leaf[1]]
                assert got == want, (family.__name__, leaf)
    # Nothing in evaluate()'s output comes from outside the families.
    produced = {leaf for leaf in seen}
    for top, value in full.items():
        if top in (*cats, "mean"):
            assert {(top, k) for k in value} <= produced, top
        else:
            assert (top,) in produced, top
    for key in METRIC_KEYS:
        assert (cats[0], key) in produced, key
    assert {"pixel", "curves", "params", "n_images"} <= set(full)


def test_evaluate_equals_merged_family_outputs(case):
    gt, preds, sem = case
    ctx = _context(case)
    merged = merge_family_outputs(ctx.categories, [(f.__name__, f(ctx)) for f in METRIC_FAMILIES])
    assert evaluate(gt, preds, semantic_dir=sem, **KW) == merged


def test_detection_and_isbi_families_split_detection_counts():
    assert set(DETECTION_KEYS).isdisjoint(ISBI_KEYS)
    assert set(DETECTION_KEYS) | set(ISBI_KEYS) == set(DetectionCounts().metrics())


def test_adding_a_family_is_one_function_and_one_entry(case, monkeypatch):
    gt, preds, _ = case

    def n_images_with_gt(ctx):
        ids = {a["image_id"] for a in ctx.gt_anns}
        return {**{name: {"n_images_with_gt": len(ids)} for name in ctx.categories},
                "mean": {"n_images_with_gt": len(ids)}}

    monkeypatch.setattr("overlapseg.evaluate.evaluator.METRIC_FAMILIES",
                        [*METRIC_FAMILIES, n_images_with_gt])
    r = evaluate(gt, preds)
    assert r["cytoplasm"]["n_images_with_gt"] == 2 and r["mean"]["n_images_with_gt"] == 2
    assert r["cytoplasm"]["AP"] is not None  # the others still run
    # Only the listed families run: a single family gives only its keys.
    from overlapseg.evaluate.families import aji_metrics
    assert evaluate(gt, preds, families=[aji_metrics]) == {
        "cytoplasm": {"AJI": r["cytoplasm"]["AJI"]}, "nucleus": {"AJI": r["nucleus"]["AJI"]},
        "mean": {"AJI": r["mean"]["AJI"]}}


def test_two_families_setting_one_key_is_an_error(case):
    gt, preds, _ = case
    from overlapseg.evaluate.families import aji_metrics

    def aji_again(ctx):
        return aji_metrics(ctx)

    with pytest.raises(ValueError, match="aji_metrics and aji_again both set cytoplasm/AJI"):
        evaluate(gt, preds, families=[aji_metrics, aji_again])

"""Operating score thresholds chosen on the validation split (issue 27).

AJI, Dice, F1, the ISBI measures, instance-derived semantic maps and the qualitative figure
count only predictions with score >= a threshold. One fixed 0.5 measures how each model's
scores are calibrated (IRNet ranks by s_cls x p_correct, the CC framework by mean Hough
votes), not how it segments. Standard practice is to pick each model's threshold where its
validation F1 (or AJI) is highest and apply it to the test split; this module does the first
half. Categories are chosen independently: a category's F1 and AJI depend only on its own
predictions, so per-category maxima also maximise the category mean.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from overlapseg.evaluate.context import EvalContext
from overlapseg.evaluate.matching import DetectionCounts, aji_counts

CRITERIA = ("F1", "AJI")
MAX_CANDIDATES = 200  # distinct thresholds tried per category (quantiles beyond that)


def candidate_thresholds(scores: Sequence[float], max_candidates: int = MAX_CANDIDATES) -> list[float]:
    """Each distinct score (keeping ``score >= s`` changes the kept set only there), or
    ``max_candidates`` of them at evenly spaced ranks when there are more; ascending."""
    distinct = np.unique(np.asarray(scores, dtype=np.float64))
    if len(distinct) > max_candidates:
        distinct = distinct[np.unique(np.linspace(0, len(distinct) - 1, max_candidates).round().astype(int))]
    return [float(s) for s in distinct]


def criterion_at(ctx: EvalContext, cat_id: int, threshold: float, criterion: str = "F1") -> float | None:
    """F1 (IoU >= 0.5 matching, micro-averaged) or AJI (mean over images) of one category
    with the predictions scored >= ``threshold``; None where undefined."""
    records = [r for r in ctx.image_categories if r.cat_id == cat_id]
    if criterion == "F1":
        counts = DetectionCounts()
        for r in records:
            keep = np.flatnonzero([a["score"] >= threshold for a in r.dts])
            counts.add(r.table_all.subset(dt_idx=keep), r.image["height"] * r.image["width"])
        return counts.metrics()["F1"]
    values = []
    for r in records:
        keep = np.flatnonzero([a["score"] >= threshold for a in r.dts])
        c, u = aji_counts(r.table_all.subset(dt_idx=keep))
        if u > 0:
            values.append(c / u)
    return float(np.mean(values)) if values else None


def select_score_thresholds(gt_json: Any, pred_json: Any, categories: Sequence[str] = ("cytoplasm", "nucleus"),
                            criterion: str = "F1", fallback: float = 0.5,
                            max_candidates: int = MAX_CANDIDATES) -> dict:
    """Per category, the score threshold maximising ``criterion`` on (``gt_json``, ``pred_json``),
    the validation split's ground truth and predictions.

    Ties go to the highest threshold (the fewest predictions for the same value). A category
    without predictions or with the criterion undefined at every threshold keeps ``fallback``.
    Returns ``{"score_threshold": {category: t}, "criterion", "validation": {category:
    value at t}, "source": {category: "validation" | "fixed"}, "n_images"}``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"threshold criterion must be one of {CRITERIA}, got {criterion!r}")
    ctx = EvalContext.build(gt_json, pred_json, categories=categories, score_threshold=0.0)
    chosen, values, source = {}, {}, {}
    for name, cid in zip(ctx.categories, ctx.cat_ids):
        scores = [a["score"] for a in ctx.dt_anns if a["category_id"] == cid]
        best = None
        for t in candidate_thresholds(scores, max_candidates):
            v = criterion_at(ctx, cid, t, criterion)
            if v is not None and (best is None or v >= best[1]):
                best = (t, v)
        if best is None:
            chosen[name], values[name], source[name] = float(fallback), None, "fixed"
        else:
            chosen[name], values[name], source[name] = best[0], float(best[1]), "validation"
    return {"score_threshold": chosen, "criterion": criterion, "validation": values,
            "source": source, "n_images": len(ctx.images)}

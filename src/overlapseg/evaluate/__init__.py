"""Evaluation suite: COCO/boundary AP, AJI, Dice, F1, ISBI 2014 measures, pixel metrics,
overlap breakdown and error analysis in one evaluator (``evaluate``)."""
from overlapseg.evaluate.evaluator import METRIC_KEYS, evaluate, write_metrics

__all__ = ["METRIC_KEYS", "evaluate", "write_metrics"]

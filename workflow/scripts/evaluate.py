"""Rule evaluate: every metric of the study for one experiment on one dataset's test split.

snakemake.input:  gt (COCO test-split annotations), pred (COCO results list),
                  semantic (directory of {image name}.npz semantic maps; optional),
                  val_gt and val_pred (validation-split annotations and predictions; optional,
                  read when score_threshold is "validation")
snakemake.output: [0] metrics JSON (results/{dataset}/metrics/{experiment}.json)
snakemake.params: categories, overlap_bins (edges), boundary_dilation, border_width,
                  optional score_threshold (a number, or "validation": chosen per category on
                  val_gt/val_pred, the fixed fallback then in fixed_threshold, default 0.5),
                  threshold_criterion (F1 | AJI), isbi_criterion and max_detections (AP's
                  per-image limit; default: follows the data), and either provenance (dict) or config + seed
                  from which overlapseg.provenance builds it.
With a validation threshold, instance models' pixel metrics are computed on maps rebuilt from
their predictions above it (their semantic files hold the maps of a fixed 0.5 cut).
"""
from pathlib import Path

from overlapseg.evaluate import evaluate, write_metrics
from overlapseg.provenance import provenance
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821 - injected by Snakemake
inp, par = snakemake.input, snakemake.params  # noqa: F821
semantic = getattr(inp, "semantic", None)
if semantic and not any(Path(semantic).glob("*.npz")):
    semantic = None  # the model wrote no semantic maps: no pixel metrics
threshold = getattr(par, "score_threshold", 0.5)
from_predictions = False
if threshold == "validation" and semantic:
    # decided when the workflow is parsed (rule param), so evaluate jobs never import torch
    from_predictions = bool(getattr(par, "semantic_from_instances", False))
metrics = evaluate(inp.gt, inp.pred, categories=tuple(par.categories),
                   semantic_dir=None if from_predictions else semantic,
                   semantic_from_predictions=from_predictions,
                   overlap_bins=par.overlap_bins, border_width=par.border_width,
                   boundary_dilation=par.boundary_dilation, score_threshold=threshold,
                   val_gt_json=getattr(inp, "val_gt", None) or None,
                   val_pred_json=getattr(inp, "val_pred", None) or None,
                   threshold_criterion=getattr(par, "threshold_criterion", "F1"),
                   fixed_threshold=getattr(par, "fixed_threshold", None),
                   isbi_criterion=getattr(par, "isbi_criterion", "iou"),
                   max_detections=getattr(par, "max_detections", None))
prov = getattr(par, "provenance", None)
if prov is None:
    inputs = [inp.gt, inp.pred] + ([semantic] if semantic else [])
    inputs += [p for p in (getattr(inp, "val_gt", None), getattr(inp, "val_pred", None)) if p]
    prov = provenance(par.config, inputs, par.seed, snakemake.wildcards.experiment)  # noqa: F821
write_metrics(snakemake.output[0], metrics, prov)  # noqa: F821

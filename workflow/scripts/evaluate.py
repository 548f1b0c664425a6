"""Rule evaluate: every metric of the study for one experiment on one dataset's test split.

snakemake.input:  gt (COCO test-split annotations), pred (COCO results list),
                  semantic (directory of {image name}.npz semantic maps; optional)
snakemake.output: [0] metrics JSON (results/{dataset}/metrics/{experiment}.json)
snakemake.params: categories, overlap_bins (edges), boundary_dilation, border_width,
                  optional score_threshold, isbi_criterion and max_detections (AP's
                  per-image limit; default: follows the data), and either provenance (dict) or config + seed
                  from which overlapseg.provenance builds it.
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
metrics = evaluate(inp.gt, inp.pred, categories=tuple(par.categories), semantic_dir=semantic,
                   overlap_bins=par.overlap_bins, border_width=par.border_width,
                   boundary_dilation=par.boundary_dilation,
                   score_threshold=getattr(par, "score_threshold", 0.5),
                   isbi_criterion=getattr(par, "isbi_criterion", "iou"),
                   max_detections=getattr(par, "max_detections", None))
prov = getattr(par, "provenance", None)
if prov is None:
    inputs = [inp.gt, inp.pred] + ([semantic] if semantic else [])
    prov = provenance(par.config, inputs, par.seed, snakemake.wildcards.experiment)  # noqa: F821
write_metrics(snakemake.output[0], metrics, prov)  # noqa: F821

"""Rule report_figures: qualitative overlays, PR curves and AP vs overlap for one dataset.

snakemake.input:  data (canonical dataset dir), gt (COCO test-split annotations),
                  predictions (list of COCO results, one per experiment), metrics (same order)
snakemake.output: results/figures/{dataset}_{qualitative,pr_curves,ap_vs_overlap}.{png,pdf}
snakemake.params: experiments (names), n_images (rows of the qualitative figure),
                  optional labels (the tables' row names of experiments, shown in the figures;
                  default the names), optional score_threshold (predictions drawn, default 0.5)
"""
from pathlib import Path

from overlapseg.report.figures import write_figures
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
inp, par = snakemake.input, snakemake.params  # noqa: F821
write_figures(inp.data, inp.gt, list(inp.predictions), list(inp.metrics), list(par.experiments),
              Path(snakemake.output[0]).parent, snakemake.wildcards.dataset,  # noqa: F821
              n_images=getattr(par, "n_images", 3), score_threshold=getattr(par, "score_threshold", 0.5),
              labels=list(par.labels) if getattr(par, "labels", None) else None)

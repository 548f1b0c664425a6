"""Rule report_table: paper-style metrics table(s) for one dataset.

snakemake.input:  metrics (list of metrics JSON files, one per experiment), optional splits
                  (the dataset's splits.json: train/val/test image counts in the caption)
snakemake.output: results/{dataset}/tables/metrics.{csv,md,tex,html}; if declared,
                  pixel.{csv,md,tex,html} (written even when no experiment has pixel metrics)
snakemake.params: experiments (names, same order as metrics), optional labels (row names,
                  default the names), optional preset (overlapseg.report.tables.PRESETS key,
                  default "default"), optional caption (overlapseg.report.captions caption_info)
"""
from pathlib import Path

from overlapseg.report.tables import write_tables
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
inp, par = snakemake.input, snakemake.params  # noqa: F821
caption = dict(getattr(par, "caption", None) or {})
if hasattr(inp, "splits"):
    caption["splits"] = inp.splits
outputs = [Path(p) for p in snakemake.output]  # noqa: F821
write_tables(list(inp.metrics), list(par.experiments), outputs[0].parent,
             preset=getattr(par, "preset", "default"),
             pixel=any(p.name.startswith("pixel.") for p in outputs) or None,
             dataset=snakemake.wildcards.dataset,  # noqa: F821
             labels=getattr(par, "labels", None), caption_info=caption)

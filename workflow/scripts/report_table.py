"""Rule report_table: paper-style metrics table(s) for one dataset.

snakemake.input:  metrics (list of metrics JSON files, one per experiment)
snakemake.output: results/{dataset}/tables/metrics.{csv,md,tex}; if declared, pixel.{csv,md,tex}
                  (written even when no experiment has pixel metrics, saying so)
snakemake.params: experiments (names, same order as metrics), optional labels (row names,
                  default the names), optional preset (overlapseg.report.tables.PRESETS key,
                  default "default")
"""
from pathlib import Path

from overlapseg.report.tables import write_tables
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
outputs = [Path(p) for p in snakemake.output]  # noqa: F821
write_tables(list(snakemake.input.metrics), list(snakemake.params.experiments),  # noqa: F821
             outputs[0].parent, preset=getattr(snakemake.params, "preset", "default"),  # noqa: F821
             pixel=any(p.name.startswith("pixel.") for p in outputs) or None,
             dataset=snakemake.wildcards.dataset,  # noqa: F821
             labels=getattr(snakemake.params, "labels", None))  # noqa: F821

"""Rule study_table: one named paper-style table (report.tables.<name> in the config).

snakemake.params: spec (the table's config: experiments, title, kind, preset, classes),
                  labels (row names, same order as spec["experiments"])
"""
from pathlib import Path

from overlapseg.report.study import write_study_table
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
spec = dict(snakemake.params.spec)
stem = Path(snakemake.output[0]).with_suffix("")
write_study_table(list(snakemake.input.metrics), spec.pop("experiments"), stem,
                  title=spec.pop("title", ""), labels=list(snakemake.params.labels), **spec)

"""Rule study_table: one named paper-style table (report.tables.<name> in the config).

snakemake.input:  metrics (one metrics JSON per experiment, spec order), optional splits (the
                  dataset's splits.json: train/val/test image counts in the caption)
snakemake.output: results/{dataset}/tables/study_{table}.csv (+ .md, .tex, .html beside it)
snakemake.params: spec (the table's config: experiments, title, kind, preset, classes),
                  labels (row names, same order as spec["experiments"]), optional caption
                  (overlapseg.report.captions caption_info: dataset, format, preset, rows, notes)
"""
from pathlib import Path

from overlapseg.report.study import write_study_table
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
spec = dict(snakemake.params.spec)  # noqa: F821
caption = {"dataset": snakemake.wildcards.dataset,  # noqa: F821
           **dict(getattr(snakemake.params, "caption", None) or {})}  # noqa: F821
if hasattr(snakemake.input, "splits"):  # noqa: F821
    caption["splits"] = snakemake.input.splits  # noqa: F821
stem = Path(snakemake.output[0]).with_suffix("")  # noqa: F821
write_study_table(list(snakemake.input.metrics), spec.pop("experiments"), stem,  # noqa: F821
                  title=spec.pop("title", ""), labels=list(snakemake.params.labels),  # noqa: F821
                  caption_info=caption, **spec)

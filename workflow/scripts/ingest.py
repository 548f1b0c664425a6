"""Rule ingest: raw annotations -> canonical dataset (images/ + annotations.json)."""
from overlapseg.data.ingest import ingest
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
ingest(snakemake.params.format, snakemake.params.raw, snakemake.output[0], scale=snakemake.params.scale,
       **snakemake.params.options)

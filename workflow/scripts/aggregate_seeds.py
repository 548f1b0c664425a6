"""Rule aggregate_seeds: mean and std over the seed runs of one experiment."""
from overlapseg.evaluate.seeds import aggregate_seeds
from overlapseg.utils.io import read_json, write_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
files = list(snakemake.input)
write_json(snakemake.output[0], aggregate_seeds([read_json(f) for f in files], snakemake.params.seeds, files))

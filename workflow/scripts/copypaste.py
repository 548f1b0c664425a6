"""Rule copypaste: copy-paste composites from the train split of a canonical dataset."""
from overlapseg.synth.copypaste import write_copypaste
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
params = dict(snakemake.params.synth)
n = params.pop("n")
seed = params.pop("seed", snakemake.params.seed)
train = read_json(snakemake.input.splits)["train"]  # never synthesise from val/test images
write_copypaste(snakemake.input.data, snakemake.output[0], n=n, seed=seed, names=train, **params)

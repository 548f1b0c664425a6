"""Rules ccce and copypaste: a synthetic canonical dataset from the train split only."""
from overlapseg.synth.ccce import write_ccce
from overlapseg.synth.copypaste import write_copypaste
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

WRITERS = {"ccce": write_ccce, "copypaste": write_copypaste}

log_to_file(snakemake)
params = dict(snakemake.params.synth)
n = params.pop("n")
seed = params.pop("seed", snakemake.params.seed)
train = read_json(snakemake.input.splits)["train"]  # never synthesise from val/test images
WRITERS[snakemake.params.method](snakemake.input.data, snakemake.output[0], n=n, seed=seed,
                                 names=train, **params)

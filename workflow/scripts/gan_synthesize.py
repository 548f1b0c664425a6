"""Rule gan_synthesize: new copy-paste layouts translated by a trained generator (masks exact)."""
from pathlib import Path

from overlapseg.train.api import resolve_device
from overlapseg.train.base import set_threads
from overlapseg.train.gan import gan_synthesize
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
set_threads(snakemake.threads)
train = read_json(snakemake.input.splits)["train"]  # layouts use train cells only
gan_synthesize(Path(snakemake.input.model).parent, snakemake.input.data, train, snakemake.output[0],
               n=snakemake.params.n, seed=snakemake.params.seed, copypaste=snakemake.params.copypaste,
               device=resolve_device(snakemake.params.device))

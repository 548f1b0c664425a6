"""Rule gan_stages: the outputs of every stage of a coarse-to-fine generator (paper 004 Figs. 1-3)."""
from pathlib import Path

from overlapseg.train.api import resolve_device
from overlapseg.train.base import set_threads
from overlapseg.train.coarse_to_fine import stages_figure
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
set_threads(snakemake.threads)
train = read_json(snakemake.input.splits)["train"]  # layouts follow the train split's statistics
stages_figure(Path(snakemake.input.model).parent, snakemake.input.data, train,
              snakemake.output.png, snakemake.output.pdf, n=3, seed=snakemake.params.seed,
              device=resolve_device(snakemake.params.device))

"""Rules maps_figure, ccce_figure, copypaste_figure (one script, dispatched on the rule)."""
from pathlib import Path

from overlapseg.synth import figures
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
stem = Path(snakemake.output.png).with_suffix("")
if snakemake.rule == "maps_figure":
    train = read_json(snakemake.input.splits)["train"]
    figures.maps_figure(snakemake.input.data, dict(zip(snakemake.params.variants,
                                                       snakemake.input.maps)), stem, names=train)
elif snakemake.rule == "ccce_figure":
    params = dict(snakemake.params.synth)
    seed = params.pop("seed", snakemake.params.seed)
    train = read_json(snakemake.input.splits)["train"]
    figures.ccce_figure(snakemake.input.data, train, params, seed, stem)
elif snakemake.rule == "copypaste_figure":
    figures.dataset_figure(snakemake.input.synth, stem, snakemake.params.title)
else:
    raise ValueError(f"synth_figures.py: unexpected rule {snakemake.rule!r}")

"""Rule train: train one experiment's model with the trainer its `model` names."""
from overlapseg.train.api import train_experiment
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
inputs = snakemake.input
train_experiment(model=snakemake.params.model, data=inputs.data, splits=inputs.splits,
                 synthetic=getattr(inputs, "synthetic", None),
                 maps=getattr(inputs, "maps", None), synthetic_maps=getattr(inputs, "synthetic_maps", None),
                 with_original=snakemake.params.train.get("with_original", False),
                 out_model=snakemake.output.model, params={**snakemake.params.params, "threads": snakemake.threads},
                 seed=snakemake.params.seed, device=snakemake.params.device)

"""Rule gan_train: train one generator of config["gan"] on the dataset's train split."""
from overlapseg.train.api import build_inputs, train_experiment
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
inputs = build_inputs(snakemake.input.data, snakemake.input.splits)
train_experiment(model=snakemake.params.model, out_model=snakemake.output.model,
                 params={**snakemake.params.params, "threads": snakemake.threads},
                 seed=snakemake.params.seed, inputs=inputs, device=snakemake.params.device)

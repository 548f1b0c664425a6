"""Rule train: train one experiment's model with the trainer its `model` names."""
from overlapseg.train.api import build_inputs, train_experiment
from overlapseg.utils.workflow import as_list, log_to_file

log_to_file(snakemake)
spec = snakemake.params.inputs  # the experiment's inputs block, defaults filled
inputs = build_inputs(snakemake.input.data, snakemake.input.splits, spec["sources"],
                      as_list(snakemake.input.get("synthetic")), spec["maps"],
                      as_list(snakemake.input.get("maps")) if spec["maps"] else None,
                      spec["mix"], snakemake.input.get("teacher"), spec.get("pool", "all"),
                      snakemake.params.get("pool_options"), init_file=snakemake.input.get("init"))
train_experiment(model=snakemake.params.model, out_model=snakemake.output.model,
                 params={**snakemake.params.params, "threads": snakemake.threads},
                 seed=snakemake.params.seed, inputs=inputs, device=snakemake.params.device)

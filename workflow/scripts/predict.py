"""Rule predict: COCO results + semantic maps for the test split of a dataset."""
from overlapseg.train.api import predict_split
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
predict_split(model=snakemake.params.model, model_file=snakemake.input.model,
              data=snakemake.input.data, splits=snakemake.input.splits, split="test",
              out_json=snakemake.output.predictions, semantic_dir=snakemake.output.semantic,
              params={**snakemake.params.params, "threads": snakemake.threads}, device=snakemake.params.device)

"""Rule predict: COCO results + semantic maps for one split of a dataset (params.split,
default test; the validation split's predictions choose the score thresholds)."""
from overlapseg.train.api import predict_split
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
predict_split(model=snakemake.params.model, model_file=snakemake.input.model,
              data=snakemake.input.data, splits=snakemake.input.splits,
              split=getattr(snakemake.params, "split", "test"),
              out_json=snakemake.output.predictions, semantic_dir=snakemake.output.semantic,
              params={**snakemake.params.params, "threads": snakemake.threads}, device=snakemake.params.device)

"""Rule predict: COCO results + semantic maps of the test split, and of the validation split
when the evaluation chooses score thresholds there (outputs predictions_val, semantic_val);
one loaded model for both."""
from overlapseg.train.api import predict_splits
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
out = snakemake.output  # noqa: F821
outputs = {"test": (out.predictions, out.semantic)}
if "predictions_val" in out.keys():
    outputs["val"] = (out.predictions_val, out.semantic_val)
predict_splits(model=snakemake.params.model, model_file=snakemake.input.model,  # noqa: F821
               data=snakemake.input.data, splits=snakemake.input.splits, outputs=outputs,  # noqa: F821
               params={**snakemake.params.params, "threads": snakemake.threads},  # noqa: F821
               device=snakemake.params.device)  # noqa: F821

"""Rule weights: ImageNet weights of a backbone into resources/weights (torchvision's weights
API, hash-checked); offline and absent it fails naming the file to put there."""
from pathlib import Path

from overlapseg.models.weights import fetch_imagenet_weights_file
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
out = Path(snakemake.output[0])  # noqa: F821
fetch_imagenet_weights_file(out.name, out.parent)

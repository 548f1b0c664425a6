"""Rule weights: ImageNet weights of a backbone into resources/weights (torchvision's weights
API, hash-checked); offline and absent it fails naming the file to put there."""
from pathlib import Path

from overlapseg.models.weights import fetch_imagenet_weights
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
out = Path(snakemake.output[0])  # noqa: F821
arch = out.name.split("-")[0]  # torchvision's file names: resnet50-0676ba61.pth
fetched = fetch_imagenet_weights(arch, out.parent)
if fetched.resolve() != out.resolve():
    raise ValueError(f"{out}: torchvision names {arch}'s ImageNet weights {fetched.name}, not {out.name}")

"""Rule split_annotations: the COCO ground truth of one split (image ids unchanged)."""
from pathlib import Path

from overlapseg.data.canonical import subset_coco
from overlapseg.utils.io import read_json, write_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
coco = read_json(Path(snakemake.input.data) / "annotations.json")
names = read_json(snakemake.input.splits)[snakemake.wildcards.split]
write_json(snakemake.output[0], subset_coco(coco, names))

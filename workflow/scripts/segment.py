"""Rule segment: a configured experiment's model applied to a folder of new images."""
from overlapseg.segment.run import segment_images
from overlapseg.train.api import resolve_device
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
par = snakemake.params  # noqa: F821
summary = segment_images(snakemake.input.model, [snakemake.input.images], snakemake.output[0],  # noqa: F821
                         save=par.save, scale=par.scale, device=resolve_device(par.device),
                         threads=snakemake.threads, min_score=par.min_score, progress=False)  # noqa: F821
if summary["failed"]:  # the job fails (Snakemake removes the folder) naming every bad image
    raise ValueError("images that could not be segmented: " + "; ".join(
        f"{f['file']}: {f['error']}" for f in summary["failed"]))

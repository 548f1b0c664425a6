"""Rule gan_report: real vs generated figure and weight-free quality numbers of a GAN set."""
from overlapseg.gan.report import side_by_side_figure, write_quality
from overlapseg.utils.io import read_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
train = read_json(snakemake.input.splits)["train"]
category = snakemake.params.category  # generators of one category (coarse-to-fine): its masks
write_quality(snakemake.output.quality, real_dir=snakemake.input.data, real_names=train,
              synth_dir=snakemake.input.synth, fid_weights=snakemake.params.fid_weights,
              category=category or "cytoplasm")
side_by_side_figure(snakemake.input.data, train, snakemake.input.synth, snakemake.params.condition,
                    snakemake.output.png, snakemake.output.pdf, category=category)

"""Rule overlap_maps: overlap-probability maps of every image of a canonical dataset."""
from overlapseg.maps.overlap_maps import write_maps
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
write_maps(snakemake.input.data, snakemake.wildcards.variant, snakemake.output[0],
           **snakemake.params.maps)

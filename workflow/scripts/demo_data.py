"""Rule demo_data: render the embedded demo dataset in the ISBI 2014 layout."""
from pathlib import Path

from overlapseg.data.demo import DemoConfig, write_demo_isbi
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
demo = dict(snakemake.params.demo)
demo["overlap"] = tuple(demo.get("overlap", DemoConfig.overlap))
write_demo_isbi(Path(snakemake.output.images).parent, DemoConfig(**demo))

"""Rule provenance: the audit map of one table (every number -> the files and versions behind it).

snakemake.input:  table (the table's CSV), chain (every file the rows depend on, for the DAG)
snakemake.output: [0] results/{dataset}/tables/{table}.provenance.json
snakemake.params: rows (one dict per row, overlapseg.provenance.experiment_chain), spec (kind,
                  preset, classes), title
"""
from overlapseg.provenance import table_provenance
from overlapseg.utils.io import write_json
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)  # noqa: F821
record = table_provenance(snakemake.input.table, dict(snakemake.params.spec),  # noqa: F821
                          [dict(r) for r in snakemake.params.rows], snakemake.wildcards.dataset,  # noqa: F821
                          name=snakemake.wildcards.table, title=snakemake.params.title)  # noqa: F821
write_json(snakemake.output[0], record)  # noqa: F821

# overlapseg study workflow: raw annotations -> canonical data -> maps / synthesis -> models
# -> predictions -> metrics -> tables and figures. See README.md.
from snakemake.utils import min_version

from overlapseg.study.config import resolve_profile, validate_config

min_version("9.0")


# config.yaml is the default study; a study given with --configfile replaces it rather than
# being deep-merged over it (otherwise the demo's experiments would leak into every study)
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The profile names the experiment catalogue (config/catalogue.yaml); resolved, every experiment
# carries its model, label, datasets and params. Then: schema (defaults filled), NaN/inf, split
# fractions, adapter options, references between names: one line per problem.
_resolved = resolve_profile(config, workflow.basedir)
config.clear()
config.update(_resolved)
validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/synth.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/segment.smk"


rule all:
    input:
        final_outputs(),
    default_target: True


# End-of-run summary on the console: tables and figures written, skipped optional data, wall time
import time as _time

from overlapseg.study.summary import run_summary

_STARTED = _time.time()


onsuccess:
    print(run_summary(STUDY, _STARTED, ok=True))


onerror:
    print(run_summary(STUDY, _STARTED, ok=False, log=log))

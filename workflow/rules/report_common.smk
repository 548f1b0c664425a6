# Input functions of the report, provenance, named-target and verify rules (report.smk,
# targets.smk, verify.smk); the derivations live in overlapseg.study.plan.
import os
import re


def experiment_labels(names):
    return STUDY.labels(names)


def provenance_inputs(wc):
    return STUDY.provenance_inputs(wc.dataset, wc.table)


def figure_files(wc, key):
    fn = paths.predictions_file if key == "predictions" else paths.metrics_file
    return [fn(wc.dataset, e) for e in STUDY.figure_experiments(wc.dataset)]


TABLE_FILES = "|".join(["metrics", "pixel"] + [re.escape(f"study_{t}") for t in STUDY.tables])
VERIFY = STUDY.verify_settings()


def _all_cores(wildcards):
    try:
        return workflow.cores
    except Exception:  # no --cores (e.g. --list-target-rules)
        return 1

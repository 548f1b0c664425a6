# `snakemake --cores 2 verify`: rerun `verify.experiments` (default: the first experiment) from
# scratch in `verify.out`/run (a nested Snakemake run of this workflow on the same config,
# restricted to those experiments) and compare models, predictions, metrics and tables with the
# main run; writes `verify.out`/report.json, or fails naming the files that differ (details in
# `verify.out`/mismatch.json). docs/reproducibility.md.
# Derivations: overlapseg.study.plan.StudyPlan.


rule verify:
    input:
        **{k: v for k, v in STUDY.verify_files().items() if v},
    output:
        f"{VERIFY['out']}/report.json",
    log:
        "logs/verify.log",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
        tolerance=VERIFY["tolerance"],
        experiments=STUDY.verify_experiments(),
        files=STUDY.verify_files(),
        config=STUDY.verify_config(),
        snakefile=workflow.main_snakefile,
    threads: _all_cores
    conda:
        CONDA_ENV
    script:
        "../scripts/verify.py"

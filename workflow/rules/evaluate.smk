rule evaluate:
    input:
        gt=lambda wc: paths.split_annotations(wc.dataset, "test"),
        pred=paths.PREDICTIONS,
        semantic=paths.SEMANTIC,
    output:
        paths.METRICS,
    log:
        "logs/{dataset}/evaluate_{experiment}.log",
    params:
        categories=config["evaluate"]["categories"],
        overlap_bins=config["evaluate"]["overlap_bins"],
        boundary_dilation=config["evaluate"]["boundary_dilation"],
        score_threshold=config["evaluate"]["score_threshold"],
        isbi_criterion=config["evaluate"]["isbi_criterion"],
        border_width=lambda wc: DATASETS[wc.dataset]["border_width"],
        config=lambda wc: STUDY.provenance_config(wc.experiment),
        seed=lambda wc: STUDY.seed(wc.experiment),
    wildcard_constraints:
        experiment=_alternatives(RUNS),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/evaluate.py"


rule aggregate_seeds:
    input:
        seed_metrics,
    output:
        paths.METRICS,
    log:
        "logs/{dataset}/aggregate_{experiment}.log",
    params:
        seeds=lambda wc: EXPERIMENTS[wc.experiment]["seeds"],
    wildcard_constraints:
        experiment=_alternatives(STUDY.seed_runs),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate_seeds.py"

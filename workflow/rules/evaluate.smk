rule evaluate:
    input:
        gt="results/{dataset}/splits/test_annotations.json",
        pred="results/{dataset}/predictions/{experiment}.json",
        semantic="results/{dataset}/semantic/{experiment}",
    output:
        "results/{dataset}/metrics/{experiment}.json",
    log:
        "logs/{dataset}/evaluate_{experiment}.log",
    params:
        categories=config["evaluate"]["categories"],
        overlap_bins=config["evaluate"]["overlap_bins"],
        boundary_dilation=config["evaluate"]["boundary_dilation"],
        score_threshold=config["evaluate"]["score_threshold"],
        isbi_criterion=config["evaluate"]["isbi_criterion"],
        border_width=lambda wc: DATASETS[wc.dataset]["border_width"],
        config=lambda wc: experiment_config(wc.experiment),
        seed=lambda wc: experiment_seed(wc.experiment),
    wildcard_constraints:
        experiment="|".join(RUNS),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/evaluate.py"


rule aggregate_seeds:
    input:
        seed_metrics,
    output:
        "results/{dataset}/metrics/{experiment}.json",
    log:
        "logs/{dataset}/aggregate_{experiment}.log",
    params:
        seeds=lambda wc: EXPERIMENTS[wc.experiment]["seeds"],
    wildcard_constraints:
        experiment="|".join(SEED_RUNS) or "^$",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate_seeds.py"

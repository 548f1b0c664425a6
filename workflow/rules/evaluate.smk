rule evaluate:
    input:
        gt=lambda wc: paths.split_annotations(wc.dataset, "test"),
        pred=paths.PREDICTIONS,
        semantic=paths.SEMANTIC,
        # the thresholds come from the validation split of the dataset the model trained on
        **({"val_gt": lambda wc: paths.split_annotations(STUDY.train_dataset(wc.experiment), "val"),
            "val_pred": lambda wc: paths.PREDICTIONS_VAL.format(dataset=STUDY.train_dataset(wc.experiment),
                                                                experiment=wc.experiment)}
           if VAL_PREDICTIONS else {}),
    output:
        paths.METRICS,
    log:
        "logs/{dataset}/evaluate_{experiment}.log",
    params:
        categories=config["evaluate"]["categories"],
        overlap_bins=config["evaluate"]["overlap_bins"],
        boundary_dilation=config["evaluate"]["boundary_dilation"],
        score_threshold=config["evaluate"]["score_threshold"],
        fixed_threshold=config["evaluate"]["fixed_threshold"],
        threshold_criterion=config["evaluate"]["threshold_criterion"],
        max_detections=config["evaluate"]["max_detections"],
        isbi_criterion=config["evaluate"]["isbi_criterion"],
        border_width=lambda wc: DATASETS[wc.dataset]["border_width"],
        semantic_from_instances=lambda wc: STUDY.semantic_from_instances(wc.experiment),
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

rule weights:
    """ImageNet weights of a backbone (torchvision's weights API, hash-checked). Runs on the
    submit host, which on clusters usually has internet while compute nodes do not."""
    output:
        paths.WEIGHTS,
    log:
        "logs/weights_{file}.log",
    wildcard_constraints:
        file=r"[A-Za-z0-9_.-]+\.pth",
    localrule: True
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/weights.py"


rule train:
    input:
        unpack(train_inputs),
    output:
        model=paths.MODEL,
    log:
        "logs/{dataset}/train_{experiment}.log",
    benchmark:
        "benchmarks/out/{dataset}/train_{experiment}.tsv"
    params:
        model=lambda wc: EXPERIMENTS[wc.experiment]["model"],
        inputs=lambda wc: STUDY.inputs(wc.experiment),
        pool_options=lambda wc: STUDY.pool_options(wc.experiment),
        params=lambda wc: EXPERIMENTS[wc.experiment].get("params", {}),
        seed=lambda wc: STUDY.seed(wc.experiment),
        device=config["device"],
    wildcard_constraints:
        experiment=_alternatives(RUNS),
    threads: lambda wc: EXPERIMENTS[wc.experiment]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=TRAIN_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/train.py"


# thresholds chosen on validation (evaluate.score_threshold: validation): predict the val split too
VAL_PREDICTIONS = ({"predictions_val": paths.PREDICTIONS_VAL, "semantic_val": temp(directory(paths.SEMANTIC_VAL))}
                   if config["evaluate"]["score_threshold"] == "validation" else {})


rule predict:
    input:
        model=lambda wc: STUDY.model_file(wc.experiment),
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        predictions=paths.PREDICTIONS,
        semantic=directory(paths.SEMANTIC),
        **VAL_PREDICTIONS,
    log:
        "logs/{dataset}/predict_{experiment}.log",
    params:
        model=lambda wc: EXPERIMENTS[wc.experiment]["model"],
        params=lambda wc: EXPERIMENTS[wc.experiment].get("params", {}),
        device=config["device"],
    wildcard_constraints:
        experiment=_alternatives(RUNS),
    threads: lambda wc: EXPERIMENTS[wc.experiment]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=PREDICT_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/predict.py"

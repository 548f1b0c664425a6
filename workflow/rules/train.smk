rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/{dataset}/models/{experiment}/model.pt",
    log:
        "logs/{dataset}/train_{experiment}.log",
    benchmark:
        "benchmarks/out/{dataset}/train_{experiment}.tsv"
    params:
        model=lambda wc: EXPERIMENTS[wc.experiment]["model"],
        inputs=lambda wc: experiment_inputs(wc.experiment),
        pool_options=pool_options(),
        params=lambda wc: EXPERIMENTS[wc.experiment].get("params", {}),
        seed=lambda wc: experiment_seed(wc.experiment),
        device=config["device"],
    wildcard_constraints:
        experiment="|".join(RUNS),
    threads: lambda wc: EXPERIMENTS[wc.experiment]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=TRAIN_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/train.py"


rule predict:
    input:
        model=lambda wc: model_file(wc.experiment),
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        predictions="results/{dataset}/predictions/{experiment}.json",
        semantic=directory("results/{dataset}/semantic/{experiment}"),
    log:
        "logs/{dataset}/predict_{experiment}.log",
    params:
        model=lambda wc: EXPERIMENTS[wc.experiment]["model"],
        params=lambda wc: EXPERIMENTS[wc.experiment].get("params", {}),
        device=config["device"],
    wildcard_constraints:
        experiment="|".join(RUNS),
    threads: lambda wc: EXPERIMENTS[wc.experiment]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=PREDICT_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/predict.py"

rule demo_data:
    output:
        images="results/{dataset}/raw/isbi_train.mat",
        gt="results/{dataset}/raw/isbi_train_GT.mat",
    log:
        "logs/{dataset}/demo_data.log",
    params:
        demo=lambda wc: DATASETS[wc.dataset]["demo"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/demo_data.py"


rule ingest:
    input:
        raw_input,
    output:
        directory("results/{dataset}/data"),
    log:
        "logs/{dataset}/ingest.log",
    params:
        format=lambda wc: DATASETS[wc.dataset]["format"],
        raw=lambda wc: DATASETS[wc.dataset]["raw"],
        options=lambda wc: DATASETS[wc.dataset].get("options", {}),
        scale=lambda wc: DATASETS[wc.dataset].get("scale", 1.0),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/ingest.py"


rule splits:
    input:
        "results/{dataset}/data",
    output:
        "results/{dataset}/splits.json",
    log:
        "logs/{dataset}/splits.log",
    params:
        splits=lambda wc: DATASETS[wc.dataset]["splits"],
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/splits.py"


rule split_annotations:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        "results/{dataset}/splits/{split}_annotations.json",
    log:
        "logs/{dataset}/split_annotations_{split}.log",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/split_annotations.py"

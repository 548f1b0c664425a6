rule demo_data:
    output:
        images=paths.RAW_DEMO_IMAGES,
        gt=paths.RAW_DEMO_GT,
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
        directory(paths.DATA),
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
        paths.DATA,
    output:
        paths.SPLITS,
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
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        paths.SPLIT_ANNOTATIONS,
    log:
        "logs/{dataset}/split_annotations_{split}.log",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/split_annotations.py"

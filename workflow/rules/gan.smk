# GAN synthesis (thesis Sec. 4.4.2, coarse-to-fine stage 3): one pix2pix generator per entry of
# config["gan"], trained on the TRAIN split; its synthetic set is a training source named after it.
# Coarse-to-fine generators (paper 004) and its baselines (polygon_cyclegan, real_pix2pix) make
# their own layouts; coarse_to_fine ones also draw results/figures/{dataset}_{generator}_stages.png.


rule gan_train:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        model="results/{dataset}/gan/{generator}/model.pt",
    log:
        "logs/{dataset}/gan_train_{generator}.log",
    benchmark:
        "benchmarks/out/{dataset}/gan_train_{generator}.tsv"
    params:
        model=lambda wc: GENERATORS[wc.generator]["model"],
        params=lambda wc: GENERATORS[wc.generator].get("params", {}),
        seed=lambda wc: GENERATORS[wc.generator].get("seed", config["seed"]),
        device=config["device"],
    wildcard_constraints:
        generator="|".join(GENERATORS) or "^$",
    threads: lambda wc: GENERATORS[wc.generator]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=TRAIN_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_train.py"


rule gan_synthesize:
    input:
        model="results/{dataset}/gan/{generator}/model.pt",
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        directory("results/{dataset}/synth/{generator}"),
    log:
        "logs/{dataset}/gan_synthesize_{generator}.log",
    params:
        n=lambda wc: GENERATORS[wc.generator]["n"],
        seed=lambda wc: GENERATORS[wc.generator].get("seed", config["seed"]),
        copypaste=layout_params("copypaste"),
        device=config["device"],
    wildcard_constraints:
        generator="|".join(GENERATORS) or "^$",
    threads: lambda wc: GENERATORS[wc.generator]["threads"]
    resources:
        gpu=gpu_request,
        slurm_partition=gpu_job_partition,
        runtime=PREDICT_RUNTIME,
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_synthesize.py"


rule gan_report:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
        synth="results/{dataset}/synth/{generator}",
        stages=gan_stage_figures,  # coarse-to-fine generators: the stage figure as well
    output:
        quality="results/{dataset}/gan/{generator}/quality.json",
        png=report("results/figures/{dataset}_gan_{generator}.png", caption="../report/gan.rst",
                   category="Figures", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "figure": "GAN {generator}"}),
        pdf="results/figures/{dataset}_gan_{generator}.pdf",
    log:
        "logs/{dataset}/gan_report_{generator}.log",
    params:
        condition=lambda wc: GENERATORS[wc.generator].get("params", {}).get("condition", "mask"),
        category=lambda wc: generator_category(wc.generator),
        fid_weights=config.get("fid_weights"),
    wildcard_constraints:
        generator="|".join(GENERATORS) or "^$",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_report.py"


rule gan_stages:
    input:
        model="results/{dataset}/gan/{generator}/model.pt",
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        png=report("results/figures/{dataset}_{generator}_stages.png", caption="../report/gan_stages.rst",
                   category="Figures", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "figure": "coarse-to-fine stages {generator}"}),
        pdf="results/figures/{dataset}_{generator}_stages.pdf",
    log:
        "logs/{dataset}/gan_stages_{generator}.log",
    params:
        seed=lambda wc: GENERATORS[wc.generator].get("seed", config["seed"]),
        device=config["device"],
    wildcard_constraints:
        generator="|".join(coarse_to_fine_generators()) or "^$",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_stages.py"

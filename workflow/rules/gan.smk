# GAN synthesis (thesis Sec. 4.4.2, coarse-to-fine stage 3): one generator per entry of
# config["gan"] that trains (a `reuse:` entry synthesises its own set with another entry's
# trained model), trained on the TRAIN split; its synthetic set is a training source named after
# it. Coarse-to-fine generators (paper 004) and its baselines (polygon_cyclegan, real_pix2pix)
# make their own layouts; coarse_to_fine ones also draw the {dataset}_{generator}_stages figure.


rule gan_train:
    input:
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        model=paths.GAN_MODEL,
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
        generator=_alternatives(STUDY.training_generators()),
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
        model=lambda wc: STUDY.gan_model(wc.generator),
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        directory(paths.SYNTH.format(dataset="{dataset}", source="{generator}")),
    log:
        "logs/{dataset}/gan_synthesize_{generator}.log",
    params:
        n=lambda wc: GENERATORS[wc.generator]["n"],
        seed=lambda wc: GENERATORS[wc.generator].get("seed", config["seed"]),
        copypaste=lambda wc: STUDY.generator_layout_params(wc.generator),
        device=config["device"],
    wildcard_constraints:
        generator=_alternatives(GENERATORS),
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
        data=paths.DATA,
        splits=paths.SPLITS,
        synth=lambda wc: paths.data_dir(wc.dataset, wc.generator),
        stages=gan_stage_figures,  # coarse-to-fine generators: the stage figure as well
    output:
        quality=paths.GAN_QUALITY,
        png=report(_fig("gan_{generator}", "png"), caption="../report/gan.rst",
                   category="Figures", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "figure": "GAN {generator}"}),
        pdf=_fig("gan_{generator}", "pdf"),
    log:
        "logs/{dataset}/gan_report_{generator}.log",
    params:
        condition=lambda wc: GENERATORS[wc.generator].get("params", {}).get("condition", "mask"),
        category=lambda wc: STUDY.generator_category(wc.generator),
        fid_weights=config.get("fid_weights"),
    wildcard_constraints:
        generator=_alternatives(GENERATORS),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_report.py"


rule gan_stages:
    input:
        model=paths.GAN_MODEL,
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        png=report(_fig("{generator}_stages", "png"), caption="../report/gan_stages.rst",
                   category="Figures", subcategory="{dataset}",
                   labels={"dataset": "{dataset}", "figure": "coarse-to-fine stages {generator}"}),
        pdf=_fig("{generator}_stages", "pdf"),
    log:
        "logs/{dataset}/gan_stages_{generator}.log",
    params:
        seed=lambda wc: GENERATORS[wc.generator].get("seed", config["seed"]),
        device=config["device"],
    wildcard_constraints:
        generator=_alternatives(STUDY.coarse_to_fine_generators()),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_stages.py"

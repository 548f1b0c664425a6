# GAN synthesis (thesis Sec. 4.4.2, coarse-to-fine stage 3): one pix2pix generator per entry of
# config["gan"], trained on the TRAIN split; its synthetic set is a training source named after it.


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
        copypaste=synth_params("copypaste"),
        device=config["device"],
    wildcard_constraints:
        generator="|".join(GENERATORS) or "^$",
    threads: lambda wc: GENERATORS[wc.generator]["threads"]
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_synthesize.py"


rule gan_report:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
        synth="results/{dataset}/synth/{generator}",
    output:
        quality="results/{dataset}/gan/{generator}/quality.json",
        png="results/figures/{dataset}_gan_{generator}.png",
        pdf="results/figures/{dataset}_gan_{generator}.pdf",
    log:
        "logs/{dataset}/gan_report_{generator}.log",
    params:
        condition=lambda wc: GENERATORS[wc.generator].get("params", {}).get("condition", "mask"),
        fid_weights=config.get("fid_weights"),
    wildcard_constraints:
        generator="|".join(GENERATORS) or "^$",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/gan_report.py"

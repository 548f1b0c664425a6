# Synthetic training sets built from the TRAIN split only: CCCE (CC-framework Alg. 1) and
# copy-paste composites (thesis Sec. 4.4.1), each a canonical dataset.


rule ccce:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        directory("results/{dataset}/synth/ccce"),
    log:
        "logs/{dataset}/ccce.log",
    params:
        method="ccce",
        synth=synth_params("ccce"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synthesize.py"


rule copypaste:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
    output:
        directory("results/{dataset}/synth/copypaste"),
    log:
        "logs/{dataset}/copypaste.log",
    params:
        method="copypaste",
        synth=synth_params("copypaste"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synthesize.py"


rule ccce_figure:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
        synth="results/{dataset}/synth/ccce",
    output:
        png=report("results/figures/{dataset}_ccce.png", caption="../report/ccce.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "CCCE"}),
        pdf="results/figures/{dataset}_ccce.pdf",
    log:
        "logs/{dataset}/ccce_figure.log",
    params:
        synth=synth_params("ccce"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"


rule copypaste_figure:
    input:
        synth="results/{dataset}/synth/copypaste",
    output:
        png=report("results/figures/{dataset}_copypaste.png", caption="../report/copypaste.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "copy-paste"}),
        pdf="results/figures/{dataset}_copypaste.pdf",
    log:
        "logs/{dataset}/copypaste_figure.log",
    params:
        title="Copy-paste composites (additive optical-density domain, thesis Sec. 4.4.1)",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"

# Synthetic training sets built from the TRAIN split only: CCCE (CC-framework Alg. 1) and
# copy-paste composites (thesis Sec. 4.4.1), each a canonical dataset.


rule ccce:
    input:
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        directory(paths.SYNTH.format(dataset="{dataset}", source="ccce")),
    log:
        "logs/{dataset}/ccce.log",
    params:
        method="ccce",
        synth=STUDY.synth_params("ccce"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synthesize.py"


rule copypaste:
    input:
        data=paths.DATA,
        splits=paths.SPLITS,
    output:
        directory(paths.SYNTH.format(dataset="{dataset}", source="copypaste")),
    log:
        "logs/{dataset}/copypaste.log",
    params:
        method="copypaste",
        synth=STUDY.synth_params("copypaste"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synthesize.py"


rule ccce_figure:
    input:
        data=paths.DATA,
        splits=paths.SPLITS,
        synth=lambda wc: paths.data_dir(wc.dataset, "ccce"),
    output:
        png=report(_fig("ccce", "png"), caption="../report/ccce.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "CCCE"}),
        pdf=_fig("ccce", "pdf"),
    log:
        "logs/{dataset}/ccce_figure.log",
    params:
        synth=STUDY.synth_params("ccce"),
        seed=config["seed"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"


rule copypaste_figure:
    input:
        synth=lambda wc: paths.data_dir(wc.dataset, "copypaste"),
    output:
        png=report(_fig("copypaste", "png"), caption="../report/copypaste.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "copy-paste"}),
        pdf=_fig("copypaste", "pdf"),
    log:
        "logs/{dataset}/copypaste_figure.log",
    params:
        title="Copy-paste composites (additive optical-density domain, thesis Sec. 4.4.1)",
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"

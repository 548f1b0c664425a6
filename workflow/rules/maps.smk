# Overlap-probability maps v0-v4 (thesis Sec. 4.3): one {name}.npz per image of a canonical
# dataset (original data or a synthetic set), with `prob` (float32) and `overlap` (uint8).

rule overlap_maps:
    input:
        data=lambda wc: data_dir(wc.dataset, wc.source),
    output:
        directory("results/{dataset}/maps/{source}/{variant}"),
    log:
        "logs/{dataset}/maps_{source}_{variant}.log",
    params:
        maps=maps_params(),
    wildcard_constraints:
        variant="|".join(MAP_VARIANTS),
        source="|".join(["original", *synthetic_sources()]),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/overlap_maps.py"


rule maps_figure:
    input:
        data="results/{dataset}/data",
        splits="results/{dataset}/splits.json",
        maps=expand("results/{{dataset}}/maps/original/{variant}", variant=MAP_VARIANTS),
    output:
        png=report("results/figures/{dataset}_maps.png", caption="../report/maps.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "overlap maps"}),
        pdf="results/figures/{dataset}_maps.pdf",
    log:
        "logs/{dataset}/maps_figure.log",
    params:
        variants=MAP_VARIANTS,
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"

# Overlap-probability maps v0-v4 (thesis Sec. 4.3): one {name}.npz per image of a canonical
# dataset (original data or a synthetic set), with `prob` (float32) and `overlap` (uint8).

rule overlap_maps:
    input:
        data=lambda wc: paths.data_dir(wc.dataset, wc.source),
    output:
        directory(paths.MAPS),
    log:
        "logs/{dataset}/maps_{source}_{variant}.log",
    params:
        maps=lambda wc: STUDY.maps_params(wc.variant),  # only what this variant reads
    wildcard_constraints:
        variant="|".join(MAP_VARIANTS),
        source=_alternatives(["original", *STUDY.synthetic_sources()]),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/overlap_maps.py"


rule maps_figure:
    input:
        data=paths.DATA,
        splits=paths.SPLITS,
        maps=lambda wc: [paths.maps_dir(wc.dataset, "original", v) for v in MAP_VARIANTS],
    output:
        png=report(_fig("maps", "png"), caption="../report/maps.rst", category="Figures",
                   subcategory="{dataset}", labels={"dataset": "{dataset}", "figure": "overlap maps"}),
        pdf=_fig("maps", "pdf"),
    log:
        "logs/{dataset}/maps_figure.log",
    params:
        variants=MAP_VARIANTS,
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/synth_figures.py"

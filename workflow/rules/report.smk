rule report_table:
    input:
        metrics=lambda wc: metrics_files(wc.dataset),
    output:
        report(
            multiext("results/{dataset}/tables/metrics", ".csv", ".md", ".tex"),
            caption="../report/metrics_table.rst",
            category="Tables",
        ),
        multiext("results/{dataset}/tables/pixel", ".csv", ".md", ".tex"),
    log:
        "logs/{dataset}/report_table.log",
    params:
        experiments=lambda wc: experiments_on(wc.dataset),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report_table.py"


rule report_figures:
    input:
        data="results/{dataset}/data",
        gt="results/{dataset}/splits/test_annotations.json",
        predictions=lambda wc: [f"results/{wc.dataset}/predictions/{e}.json" for e in experiments_on(wc.dataset)],
        metrics=lambda wc: metrics_files(wc.dataset),
    output:
        report(
            multiext("results/figures/{dataset}_qualitative", ".png", ".pdf"),
            caption="../report/qualitative.rst",
            category="Figures",
        ),
        multiext("results/figures/{dataset}_pr_curves", ".png", ".pdf"),
        multiext("results/figures/{dataset}_ap_vs_overlap", ".png", ".pdf"),
    log:
        "logs/{dataset}/report_figures.log",
    params:
        experiments=lambda wc: experiments_on(wc.dataset),
        n_images=config["report"]["qualitative_images"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report_figures.py"

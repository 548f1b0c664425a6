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
        predictions=lambda wc: [f"results/{wc.dataset}/predictions/{e}.json" for e in figure_experiments(wc.dataset)],
        metrics=lambda wc: [f"results/{wc.dataset}/metrics/{e}.json" for e in figure_experiments(wc.dataset)],
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
        experiments=lambda wc: figure_experiments(wc.dataset),
        n_images=config["report"]["qualitative_images"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report_figures.py"


rule study_table:
    input:
        metrics=lambda wc: study_table_metrics(wc.dataset, wc.table),
    output:
        report(
            multiext("results/{dataset}/tables/study_{table}", ".csv", ".md", ".tex"),
            caption="../report/study_table.rst",
            category="Tables",
        ),
    log:
        "logs/{dataset}/study_table_{table}.log",
    params:
        spec=lambda wc: config["report"]["tables"][wc.table],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/study_table.py"

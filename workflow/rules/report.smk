# Tables (rows named by the experiments' `label:`), figures, and the provenance map of every
# table (`overlapseg audit` reads it). Every table and figure carries a caption in
# `snakemake --report` (workflow/report/*.rst). Helpers: report_common.smk.


include: "report_common.smk"


rule report_table:
    input:
        metrics=lambda wc: metrics_files(wc.dataset),
    output:
        report(
            "results/{dataset}/tables/metrics.csv",
            caption="../report/metrics_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "metrics"},
        ),
        multiext("results/{dataset}/tables/metrics", ".md", ".tex"),
        report(
            "results/{dataset}/tables/pixel.csv",
            caption="../report/pixel_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "pixel"},
        ),
        multiext("results/{dataset}/tables/pixel", ".md", ".tex"),
    log:
        "logs/{dataset}/report_table.log",
    params:
        experiments=lambda wc: experiments_on(wc.dataset),
        labels=lambda wc: experiment_labels(experiments_on(wc.dataset)),
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
            "results/figures/{dataset}_qualitative.png",
            caption="../report/qualitative.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "qualitative"},
        ),
        "results/figures/{dataset}_qualitative.pdf",
        report(
            "results/figures/{dataset}_pr_curves.png",
            caption="../report/pr_curves.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "precision-recall"},
        ),
        "results/figures/{dataset}_pr_curves.pdf",
        report(
            "results/figures/{dataset}_ap_vs_overlap.png",
            caption="../report/ap_vs_overlap.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "AP vs overlap"},
        ),
        "results/figures/{dataset}_ap_vs_overlap.pdf",
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
            "results/{dataset}/tables/study_{table}.csv",
            caption="../report/study_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "{table}"},
        ),
        multiext("results/{dataset}/tables/study_{table}", ".md", ".tex"),
    log:
        "logs/{dataset}/study_table_{table}.log",
    params:
        spec=lambda wc: config["report"]["tables"][wc.table],
        labels=lambda wc: experiment_labels(config["report"]["tables"][wc.table]["experiments"]),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/study_table.py"


rule provenance:
    input:
        unpack(provenance_inputs),
    output:
        report(
            "results/{dataset}/tables/{table}.provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "{table}"},
        ),
    log:
        "logs/{dataset}/provenance_{table}.log",
    params:
        rows=lambda wc: provenance_rows(wc.dataset, wc.table),
        spec=lambda wc: table_spec(wc.table),
        title=lambda wc: table_title(wc.dataset, wc.table),
    wildcard_constraints:
        table=TABLE_FILES,
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/table_provenance.py"

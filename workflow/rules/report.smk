# Tables (rows named by the experiments' `label:`), figures, and the provenance map of every
# table (`overlapseg audit` reads it). Every table and figure carries a caption in
# `snakemake --report` (workflow/report/*.rst). Helpers: report_common.smk.


include: "report_common.smk"


# First page of `snakemake --report`: what the workflow does and how to read the report.
report: "../report/workflow.rst"


rule report_table:
    input:
        metrics=lambda wc: STUDY.metrics_files(wc.dataset),
        splits=lambda wc: paths.splits_file(wc.dataset),
    output:
        _table("metrics", "csv"),
        _table("metrics", "md"),
        _table("metrics", "tex"),
        report(
            _table("metrics", "html"),
            caption="../report/metrics_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "metrics"},
        ),
        _table("pixel", "csv"),
        _table("pixel", "md"),
        _table("pixel", "tex"),
        report(
            _table("pixel", "html"),
            caption="../report/pixel_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "pixel"},
        ),
    log:
        "logs/{dataset}/report_table.log",
    params:
        experiments=lambda wc: STUDY.experiments_on(wc.dataset),
        labels=lambda wc: STUDY.labels(STUDY.experiments_on(wc.dataset)),
        caption=lambda wc: STUDY.caption_info(wc.dataset, STUDY.experiments_on(wc.dataset)),
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report_table.py"


rule report_figures:
    input:
        data=paths.DATA,
        gt=lambda wc: paths.split_annotations(wc.dataset, "test"),
        predictions=lambda wc: figure_files(wc, "predictions"),
        metrics=lambda wc: figure_files(wc, "metrics"),
    output:
        report(
            _fig("qualitative", "png"),
            caption="../report/qualitative.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "qualitative"},
        ),
        _fig("qualitative", "pdf"),
        report(
            _fig("pr_curves", "png"),
            caption="../report/pr_curves.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "precision-recall"},
        ),
        _fig("pr_curves", "pdf"),
        report(
            _fig("ap_vs_overlap", "png"),
            caption="../report/ap_vs_overlap.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "AP vs overlap"},
        ),
        _fig("ap_vs_overlap", "pdf"),
    log:
        "logs/{dataset}/report_figures.log",
    params:
        experiments=lambda wc: STUDY.figure_experiments(wc.dataset),
        labels=lambda wc: STUDY.labels(STUDY.figure_experiments(wc.dataset)),
        n_images=config["report"]["qualitative_images"],
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/report_figures.py"


rule study_table:
    input:
        metrics=lambda wc: STUDY.study_table_metrics(wc.dataset, wc.table),
        splits=lambda wc: paths.splits_file(wc.dataset),
    output:
        _table("study_{table}", "csv"),
        _table("study_{table}", "md"),
        _table("study_{table}", "tex"),
        report(
            _table("study_{table}", "html"),
            caption="../report/study_table.rst",
            category="Tables",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "{table}"},
        ),
    log:
        "logs/{dataset}/study_table_{table}.log",
    params:
        spec=lambda wc: STUDY.tables[wc.table],
        labels=lambda wc: STUDY.labels(STUDY.tables[wc.table]["experiments"]),
        caption=lambda wc: STUDY.caption_info(wc.dataset, STUDY.tables[wc.table]["experiments"]),
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
            paths.PROVENANCE,
            caption="../report/provenance.rst",
            category="Provenance",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "{table}"},
        ),
    log:
        "logs/{dataset}/provenance_{table}.log",
    params:
        rows=lambda wc: STUDY.provenance_rows(wc.dataset, wc.table),
        spec=lambda wc: STUDY.table_spec(wc.table),
        title=lambda wc: STUDY.table_title(wc.dataset, wc.table),
    wildcard_constraints:
        table=TABLE_FILES,
    threads: 1
    conda:
        CONDA_ENV
    script:
        "../scripts/table_provenance.py"

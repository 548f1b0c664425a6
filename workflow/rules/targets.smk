# Named targets, generated from the config (`snakemake --list-target-rules` lists them):
#   snakemake --cores 2 <experiment>   one ablation: its model and its metrics on every test
#                                      dataset, plus whatever they need (data, maps, synthetic
#                                      sets, a teacher model), nothing else;
#   snakemake --cores 2 table_<name>   one paper table (report.tables.<name>) and its provenance
#                                      map on every dataset it applies to.
# An experiment or table whose rule name clashes with a workflow rule fails at config load.
# Helpers (and the provenance maps joining `rule all`): report_common.smk.

_check_target_names()


for _experiment in (e for e in config["experiments"] if e in EXPERIMENTS):

    rule:
        name:
            _experiment
        input:
            experiment_targets(_experiment),

    workflow.get_rule(_experiment).docstring = (
        f"experiment {experiment_label(_experiment)!r}: {EXPERIMENTS[_experiment]['model']} trained on "
        f"{EXPERIMENTS[_experiment]['train']['dataset']}, metrics on {', '.join(EXPERIMENTS[_experiment]['test'])}")


for _table in config["report"].get("tables", {}):

    rule:
        name:
            f"table_{_table}"
        input:
            table_targets(_table),

    workflow.get_rule(f"table_{_table}").docstring = (
        f"table {config['report']['tables'][_table].get('title', _table)!r} on "
        f"{', '.join(table_datasets(_table)) or 'no dataset (its experiments share no test dataset)'}")

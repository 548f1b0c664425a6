# Named targets, generated from the config (`snakemake --list-target-rules` lists them):
#   snakemake --cores 2 <experiment>   one ablation: its model and its metrics on every test
#                                      dataset, plus whatever they need (data, maps, synthetic
#                                      sets, a teacher model), nothing else;
#   snakemake --cores 2 table_<name>   one paper table (report.tables.<name>) and its provenance
#                                      map on every dataset it applies to.
# An experiment or table whose rule name clashes with a workflow rule fails at config load.
# Derivations: overlapseg.study.plan.StudyPlan.

STUDY.check_target_names(r.name for r in workflow.rules)


for _experiment in (e for e in config["experiments"] if e in EXPERIMENTS):

    rule:
        name:
            _experiment
        input:
            STUDY.experiment_targets(_experiment),

    workflow.get_rule(_experiment).docstring = (
        f"experiment {STUDY.label(_experiment)!r}: {EXPERIMENTS[_experiment]['model']} trained on "
        f"{EXPERIMENTS[_experiment]['train']['dataset']}, metrics on {', '.join(EXPERIMENTS[_experiment]['test'])}")


for _table in STUDY.tables:

    rule:
        name:
            f"table_{_table}"
        input:
            STUDY.table_targets(_table),

    workflow.get_rule(f"table_{_table}").docstring = (
        f"table {STUDY.tables[_table].get('title', _table)!r} on "
        f"{', '.join(STUDY.table_datasets(_table)) or 'no dataset (its experiments share no test dataset)'}")

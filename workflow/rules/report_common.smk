# Helpers of the report, provenance, named-target and verify rules (report.smk, targets.smk,
# verify.smk); included by report.smk, after common.smk.
import copy
import os
import re
from types import SimpleNamespace


# ----------------------------------------------------------------------------- tables, provenance
def experiment_label(name):
    """Row name in the tables: the experiment's `label:` (as in the paper), default its id."""
    return EXPERIMENTS[name].get("label", name)


def experiment_labels(names):
    return [experiment_label(n) for n in names]


def table_files(dataset):
    """Stems of the tables written for a dataset: metrics, pixel and study_{name}."""
    return ["metrics", "pixel"] + [f"study_{t}" for t in study_tables(dataset)]


def table_experiments(dataset, table):
    if table in ("metrics", "pixel"):
        return experiments_on(dataset)
    return config["report"]["tables"][table[len("study_"):]]["experiments"]


def table_spec(table):
    """kind / preset / classes of a table file (overlapseg.report.study.build_table)."""
    if table == "metrics":
        return {"kind": "instance", "preset": "default"}
    if table == "pixel":
        return {"kind": "pixel"}
    spec = config["report"]["tables"][table[len("study_"):]]
    return {"kind": spec.get("kind", "instance"), "preset": spec.get("preset", "default"),
            "classes": spec.get("classes")}


def table_title(dataset, table):
    if table == "metrics":
        return f"Instance segmentation metrics on {dataset}"
    if table == "pixel":
        return f"Pixel-level semantic metrics on {dataset}"
    return config["report"]["tables"][table[len("study_"):]].get("title", table)


def synthetic_record(dataset, source):
    """Where a synthetic training source lives and what made it (seed, parameters)."""
    if source in config.get("synth", {}):
        params = synth_params(source)
        return {"source": source, "kind": "synthesis", "path": data_dir(dataset, source),
                "seed": params.get("seed", config["seed"]), "params": params}
    gen = config.get("gan", {}).get(source, {})
    return {"source": source, "kind": "generator", "path": data_dir(dataset, source),
            "seed": gen.get("seed", config["seed"]), "model": gen.get("model"),
            "params": gen.get("params", {})}


def seed_runs_of(name):
    """The seed runs a multi-seed experiment aggregates (common.smk SEED_RUNS); [] for a run."""
    return list(globals().get("SEED_RUNS", {}).get(name, []))


def _run_row(e, dataset):
    """The files behind one trained run's metrics on ``dataset``."""
    train_ds = EXPERIMENTS[e]["train"]["dataset"]
    spec = experiment_inputs(e)
    used = sorted({train_ds, dataset})
    return {
        "label": experiment_label(e), "experiment": e,
        "metrics": f"results/{dataset}/metrics/{e}.json",
        "predictions": f"results/{dataset}/predictions/{e}.json",
        "semantic": f"results/{dataset}/semantic/{e}",
        "model": model_file(e), "train_dataset": train_ds, "test_dataset": dataset,
        "splits": {"train": f"results/{train_ds}/splits.json", "test": f"results/{dataset}/splits.json"},
        "data": {d: data_dir(d) for d in used},
        "raw": {d: list(raw_input(SimpleNamespace(dataset=d))) for d in used},
        "synthetic": [synthetic_record(train_ds, s) for s in spec["sources"] if s != "original"],
        "maps": spec["maps"],
        "teacher": {"experiment": spec["teacher"], "model": model_file(spec["teacher"])}
                   if spec["teacher"] else None,
    }


def provenance_rows(dataset, table):
    """One dict per table row (overlapseg.provenance.experiment_chain); a multi-seed experiment's
    row holds its aggregate metrics file and one such dict per seed run."""
    rows = []
    for e in table_experiments(dataset, table):
        runs = seed_runs_of(e)
        if runs:
            rows.append({"label": experiment_label(e), "experiment": e,
                         "metrics": f"results/{dataset}/metrics/{e}.json",
                         "runs": [_run_row(r, dataset) for r in runs]})
        else:
            rows.append(_run_row(e, dataset))
    return rows


def provenance_inputs(wildcards):
    files = set()
    for row in provenance_rows(wildcards.dataset, wildcards.table):
        files.add(row["metrics"])
        for r in row.get("runs", [row]):
            files.update([r["metrics"], r["predictions"], r["semantic"], r["model"], *r["splits"].values(),
                          *r["data"].values(), *(p for paths in r["raw"].values() for p in paths),
                          *(s["path"] for s in r["synthetic"])])
            if r["teacher"]:
                files.add(r["teacher"]["model"])
    return {"table": f"results/{wildcards.dataset}/tables/{wildcards.table}.csv", "chain": sorted(files)}


def provenance_files(dataset):
    return [f"results/{dataset}/tables/{t}.provenance.json" for t in table_files(dataset)]


TABLE_FILES = "|".join(["metrics", "pixel"] + [re.escape(f"study_{t}") for t in config["report"].get("tables", {})])


# ----------------------------------------------------------------------------- named targets
TARGET_RULE_NAMES = {"all", "provenance", "verify"}  # rules no experiment or table may be named after


def experiment_targets(name):
    """Model(s) and metrics on every test dataset (a multi-seed experiment: every seed's model)."""
    models = [model_file(r) for r in seed_runs_of(name) or [name]]
    return models + [f"results/{ds}/metrics/{name}.json" for ds in EXPERIMENTS[name]["test"]]


def table_datasets(table):
    """Datasets on which every experiment of report table ``table`` is evaluated."""
    return [ds for ds in evaluated_datasets() if table in study_tables(ds)]


def table_targets(table):
    out = []
    for ds in table_datasets(table):
        out += expand("results/{ds}/tables/study_{t}.{ext}", ds=ds, t=table, ext=["csv", "md", "tex"])
        out.append(f"results/{ds}/tables/study_{table}.provenance.json")
    return out


def _check_target_names():
    """Experiment and table rule names must not clash with workflow rules or each other."""
    taken = {r.name for r in workflow.rules} | TARGET_RULE_NAMES
    tables = {f"table_{t}": t for t in config["report"].get("tables", {})}
    for name in config["experiments"]:
        if name in taken:
            raise ValueError(f"config: experiment name {name!r} clashes with the workflow rule {name!r} "
                             f"(experiment names are target rules: `snakemake {name}`); rename the experiment")
        if name in tables:
            raise ValueError(f"config: experiment name {name!r} clashes with the target rule of report "
                             f"table {tables[name]!r}; rename one of them")
    for rule_name, table in tables.items():
        if rule_name in taken:
            raise ValueError(f"config: report table {table!r} gives target rule {rule_name!r}, which "
                             f"clashes with a workflow rule; rename the table")
    for table, spec in config["report"].get("tables", {}).items():
        labels = experiment_labels(spec["experiments"])
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise ValueError(f"config: report table {table!r} has several rows labelled {dup}; "
                             f"give its experiments distinct `label:`s")


_final_outputs_of_the_study = final_outputs


def final_outputs():
    """The study's outputs (common.smk) plus the provenance map of every table."""
    return _final_outputs_of_the_study() + [p for ds in evaluated_datasets() for p in provenance_files(ds)]


# ----------------------------------------------------------------------------- verify
def verify_settings():
    v = dict(config.get("verify") or {})
    v["experiments"] = list(v.get("experiments") or [next(iter(config["experiments"]))])
    v.setdefault("out", "results/verify")
    v["tolerance"] = float(v.get("tolerance", 0.0))
    unknown = [e for e in v["experiments"] if e not in config["experiments"]]
    if unknown:
        raise ValueError(f"config: verify.experiments names unknown experiments {unknown} "
                         f"(experiments of the config; a seed run is verified through its experiment)")
    out = v["out"].rstrip("/")
    if out in ("", ".", "results") or any(out == f"results/{ds}" or out.startswith(f"results/{ds}/")
                                          for ds in DATASETS):
        raise ValueError(f"config: verify.out {v['out']!r} must be a folder of its own (e.g. results/verify)")
    v["out"] = out
    return v


VERIFY = verify_settings()


def verify_experiments():
    """The verified experiments, their seed runs and the teachers they need, in config order."""
    keep, todo = set(), list(VERIFY["experiments"])
    while todo:
        e = todo.pop()
        if e not in keep:
            keep.add(e)
            todo += seed_runs_of(e)
            if not seed_runs_of(e) and experiment_inputs(e)["teacher"]:
                todo.append(experiment_inputs(e)["teacher"])
    return [e for e in EXPERIMENTS if e in keep]


def verify_config():
    """The rerun's config: this one, restricted to the verified experiments and their tables."""
    keep = set(verify_experiments())
    cfg = copy.deepcopy(config)
    cfg["experiments"] = {e: spec for e, spec in cfg["experiments"].items() if e in keep}
    report_cfg = cfg.setdefault("report", {})
    report_cfg["tables"] = {t: s for t, s in report_cfg.get("tables", {}).items() if set(s["experiments"]) <= keep}
    if report_cfg.get("figure_experiments"):
        chosen = [e for e in report_cfg["figure_experiments"] if e in keep]
        if chosen:
            report_cfg["figure_experiments"] = chosen
        else:
            del report_cfg["figure_experiments"]
    cfg["verify"] = {**VERIFY, "experiments": [e for e in VERIFY["experiments"]]}
    return cfg


def verify_files():
    """Paths (relative to both runs) compared: whole files, and tables compared by row."""
    keep = verify_experiments()
    datasets = sorted({ds for e in keep for ds in EXPERIMENTS[e]["test"]})
    runs = [e for e in keep if not seed_runs_of(e)]  # trained: a model and predictions
    files = {"models": [model_file(e) for e in runs],
             "predictions": [f"results/{ds}/predictions/{e}.json" for e in runs for ds in EXPERIMENTS[e]["test"]],
             "metrics": [f"results/{ds}/metrics/{e}.json" for e in keep for ds in EXPERIMENTS[e]["test"]],
             "tables": [], "table_cells": []}
    for ds in datasets:
        files["table_cells"] += [f"results/{ds}/tables/metrics.csv", f"results/{ds}/tables/pixel.csv"]
        for t in study_tables(ds):
            if set(config["report"]["tables"][t]["experiments"]) <= set(keep):
                files["tables"] += expand("results/{ds}/tables/study_{t}.{ext}", ds=ds, t=t, ext=["csv", "md", "tex"])
    return files


def _all_cores(wildcards):
    try:
        return workflow.cores
    except Exception:  # no --cores (e.g. --list-target-rules)
        return 1

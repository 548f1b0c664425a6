# Everything derived from the config lives here as small named functions.
import json
from pathlib import Path

from overlapseg.provenance import provenance

DATASETS = config["datasets"]
EXPERIMENTS = config["experiments"]
CONDA_ENV = "../../envs/overlapseg.yaml"


def _check_config():
    """Cross-references the JSON schema cannot express; fail before any job runs."""
    for name, exp in EXPERIMENTS.items():
        for ds in [exp["train"]["dataset"], *exp["test"]]:
            if ds not in DATASETS:
                raise ValueError(f"config: experiment {name!r} names unknown dataset {ds!r} "
                                 f"(datasets: {', '.join(DATASETS)})")
        if DATASETS[exp["train"]["dataset"]]["splits"].get("preset") == "test-only":
            raise ValueError(f"config: experiment {name!r} trains on test-only dataset "
                             f"{exp['train']['dataset']!r}")


_check_config()


wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    split="train|val|test",


def experiment_seed(name):
    return EXPERIMENTS[name].get("seed", config["seed"])


# ----------------------------------------------------------------------------- data
def raw_input(wildcards):
    """Rendered demo files, or the user's raw folder (a missing folder fails the dry run)."""
    ds = DATASETS[wildcards.dataset]
    if "demo" in ds:
        return [f"{ds['raw']}/isbi_train.mat", f"{ds['raw']}/isbi_train_GT.mat"]
    return [ds["raw"]]


def data_dir(dataset, source="original"):
    if source == "original":
        return f"results/{dataset}/data"
    return f"results/{dataset}/synth/{source}"


# ----------------------------------------------------------------------------- training
def train_inputs(wildcards):
    exp = EXPERIMENTS[wildcards.experiment]
    ds, source = exp["train"]["dataset"], exp["train"].get("source", "original")
    inputs = {"data": data_dir(ds), "splits": f"results/{ds}/splits.json"}
    if source != "original":
        inputs["synthetic"] = data_dir(ds, source)
    return inputs


def experiment_config(name):
    """The config slice an experiment depends on (hashed into provenance)."""
    exp = EXPERIMENTS[name]
    datasets = sorted({exp["train"]["dataset"], *exp["test"]})
    return {"experiment": exp, "datasets": {d: DATASETS[d] for d in datasets},
            "evaluate": config.get("evaluate", {}), "seed": experiment_seed(name),
            **{k: config[k] for k in ("maps", "synth") if k in config}}


# ----------------------------------------------------------------------------- targets
def metrics_files(dataset):
    return [f"results/{dataset}/metrics/{name}.json" for name, exp in EXPERIMENTS.items()
            if dataset in exp["test"]]


def experiments_on(dataset):
    return [name for name, exp in EXPERIMENTS.items() if dataset in exp["test"]]


def evaluated_datasets():
    return sorted({d for exp in EXPERIMENTS.values() for d in exp["test"]})


def final_outputs():
    outputs = []
    for ds in evaluated_datasets():
        outputs += metrics_files(ds)
        outputs += expand("results/{dataset}/tables/metrics.{ext}", dataset=ds, ext=["csv", "md", "tex"])
        outputs += expand("results/figures/{dataset}_{kind}.png", dataset=ds,
                          kind=["qualitative", "pr_curves", "ap_vs_overlap"])
    return outputs

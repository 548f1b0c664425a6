import sys
from pathlib import Path

# Everything derived from the config lives here as small named functions.
def _present_datasets():
    """Datasets of the config, minus optional ones whose raw folder is missing."""
    out = {}
    for name, ds in config["datasets"].items():
        if ds.get("optional") and "demo" not in ds and not Path(ds["raw"]).exists():
            print(f"config: optional dataset {name!r} skipped: {ds['raw']} not found", file=sys.stderr)
            continue
        out[name] = ds
    return out


def _expand_seeds(experiments):
    """An experiment with ``seeds: [s, ...]`` becomes one run per seed (``{name}_seed{s}``, rows
    of their own) plus the experiment itself, whose metrics are the mean and std over seeds."""
    out, parents = {}, {}
    for name, exp in experiments.items():
        skipped = set(config["datasets"]) - set(DATASETS)  # optional datasets not present
        exp = {**exp, "test": [d for d in exp["test"] if d not in skipped]}
        seeds = exp.pop("seeds", None)
        if seeds:
            if "seed" in exp:
                raise ValueError(f"config: experiment {name!r} sets both seed and seeds")
            label = exp.get("label", name)
            parents[name] = [f"{name}_seed{s}" for s in seeds]
            for s, run in zip(seeds, parents[name]):
                if run in experiments:
                    raise ValueError(f"config: seed run {run!r} of {name!r} clashes with an experiment")
                out[run] = {**exp, "seed": s, "label": f"{label} (seed {s})"}
        out[name] = {**exp, "seeds": seeds} if seeds else exp
    return out, parents


DATASETS = _present_datasets()
EXPERIMENTS, SEED_RUNS = _expand_seeds(config["experiments"])
#: experiments that train a model (every one except multi-seed aggregates)
RUNS = [name for name in EXPERIMENTS if name not in SEED_RUNS]
GENERATORS = config.get("gan", {})
CONDA_ENV = "../../envs/overlapseg.yaml"


def synthetic_sources():
    """Synthetic training sources the config can build: its synth methods and GAN generators."""
    return sorted(config.get("synth", {})) + sorted(GENERATORS)


def _check_config():
    """Cross-references the JSON schema cannot express; fail before any job runs."""
    from overlapseg.train.base import get_trainer, TrainInputs

    known_sources = ["original", *synthetic_sources()]
    for name, exp in EXPERIMENTS.items():
        spec = exp.get("inputs", {})
        sources = spec.get("sources", ["original"])
        for source in sources:
            if source not in known_sources:
                raise ValueError(f"config: experiment {name!r} trains on unknown source {source!r} "
                                 f"(known: {', '.join(known_sources)})")
        teacher = spec.get("teacher")
        if teacher is not None and teacher not in EXPERIMENTS:
            raise ValueError(f"config: experiment {name!r} names unknown teacher experiment {teacher!r}")
        if spec.get("mix") is not None and len(spec["mix"]) != len(sources):
            raise ValueError(f"config: experiment {name!r}: inputs.mix has {len(spec['mix'])} "
                             f"weights for {len(sources)} sources")
        try:  # params resolved against the trainer's defaults, inputs checked by the trainer
            get_trainer(exp["model"])(exp.get("params"), 0, "cpu",
                                      TrainInputs([], None, spec.get("mix"), spec.get("maps"),
                                                  teacher and model_file(teacher)))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"config: experiment {name!r}: {str(exc).strip(chr(34))}") from None
    for name, gen in GENERATORS.items():
        if name in config.get("synth", {}) or name == "original":
            raise ValueError(f"config: generator name {name!r} clashes with a synthesis method")
        if gen["dataset"] not in DATASETS:
            raise ValueError(f"config: generator {name!r} names unknown dataset {gen['dataset']!r}")
        try:
            trainer = get_trainer(gen["model"])
            trainer(gen.get("params"), 0, "cpu")
        except (KeyError, ValueError) as exc:
            raise ValueError(f"config: generator {name!r}: {str(exc).strip(chr(34))}") from None
        if trainer.PRODUCES_INSTANCES:
            raise ValueError(f"config: generator {name!r}: {gen['model']!r} is not a generator")
    for table, spec in config["report"].get("tables", {}).items():
        unknown = set(spec["experiments"]) - set(EXPERIMENTS)
        if unknown:
            raise ValueError(f"config: report table {table!r} names unknown experiments {sorted(unknown)}")


wildcard_constraints:
    dataset="|".join(DATASETS),
    experiment="|".join(EXPERIMENTS),
    split="train|val|test",


def experiment_seed(name):
    return EXPERIMENTS[name].get("seed", config["seed"])


def seed_metrics(wildcards):
    return [f"results/{wildcards.dataset}/metrics/{run}.json" for run in SEED_RUNS[wildcards.experiment]]


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


# ----------------------------------------------------------------------------- maps, synthesis
from overlapseg.maps.overlap_maps import VARIANTS as MAP_VARIANTS


def maps_params():
    """config["maps"] minus the keys that are not map parameters."""
    return {k: v for k, v in config.get("maps", {}).items() if k not in ("variants", "figure")}


def synth_params(method):
    return dict(config.get("synth", {}).get(method, {}))


def layout_params(method):
    """A synthesis method's layout parameters without its run keys (how many images, seed):
    what GAN generators reuse to lay out their own sets (their `n` and seed are their own)."""
    return {k: v for k, v in synth_params(method).items() if k not in ("n", "seed")}


# ----------------------------------------------------------------------------- GAN generators
def coarse_to_fine_generators():
    return [name for name, gen in GENERATORS.items() if gen["model"] == "coarse_to_fine"]


def generator_category(name):
    """The instance category a generator annotates (its resolved ``category`` param; pix2pix
    generators keep the copy-paste layouts' cells and nuclei: None)."""
    from overlapseg.train.base import get_trainer

    gen = GENERATORS[name]
    return get_trainer(gen["model"]).resolve_params(gen.get("params")).get("category")


def gan_stage_figures(wc):
    if wc.generator in coarse_to_fine_generators():
        return [f"results/figures/{wc.dataset}_{wc.generator}_stages.png"]
    return []


# ----------------------------------------------------------------------------- training
def experiment_inputs(name):
    """The experiment's ``inputs:`` block with its defaults (sources, mix, maps, teacher)."""
    spec = EXPERIMENTS[name].get("inputs", {})
    return {"sources": list(spec.get("sources", ["original"])), "mix": spec.get("mix"),
            "maps": spec.get("maps"), "teacher": spec.get("teacher"), "pool": spec.get("pool", "all")}


def pool_options():
    """How the inputs block's ``pool`` tells discrete from aggregated images (as CCCE does)."""
    ccce = config.get("synth", {}).get("ccce", {})
    return {k: ccce[k] for k in ("max_cells_discrete", "max_overlap_ratio") if k in ccce}


def train_inputs(wildcards):
    """Paths the inputs block names: synthetic sets, their maps, a teacher model."""
    ds = EXPERIMENTS[wildcards.experiment]["train"]["dataset"]
    if wildcards.dataset != ds:
        raise ValueError(f"experiment {wildcards.experiment!r} trains on {ds!r}, not {wildcards.dataset!r}")
    spec = experiment_inputs(wildcards.experiment)
    inputs = {"data": data_dir(ds), "splits": f"results/{ds}/splits.json"}
    synthetic = [s for s in spec["sources"] if s != "original"]
    if synthetic:
        inputs["synthetic"] = [data_dir(ds, s) for s in synthetic]
    if spec["maps"]:  # map-guided loss: the maps rule feeds training, one map set per source
        inputs["maps"] = [f"results/{ds}/maps/{s}/{spec['maps']}" for s in spec["sources"]]
    if spec["teacher"]:
        inputs["teacher"] = model_file(spec["teacher"])
    return inputs


def model_file(experiment):
    """Models live under the dataset they were trained on (configs may share experiment names)."""
    return f"results/{EXPERIMENTS[experiment]['train']['dataset']}/models/{experiment}/model.pt"


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


def figure_experiments(dataset):
    """Experiments drawn in the figures (report.figure_experiments; default: all on the dataset)."""
    chosen = config["report"].get("figure_experiments")
    on = experiments_on(dataset)
    return [e for e in chosen if e in on] if chosen else on


def evaluated_datasets():
    return sorted({d for exp in EXPERIMENTS.values() for d in exp["test"]})


def study_tables(dataset):
    """Named tables whose experiments are all evaluated on ``dataset``."""
    tables = config["report"].get("tables", {})
    on = set(experiments_on(dataset))
    return [name for name, spec in tables.items() if set(spec["experiments"]) <= on]


def study_table_metrics(dataset, table):
    return [f"results/{dataset}/metrics/{e}.json" for e in config["report"]["tables"][table]["experiments"]]


def data_figures(dataset):
    """Figures of the data-side methods (maps, synthesis), for datasets with a train split."""
    if DATASETS[dataset]["splits"].get("preset") == "test-only":
        return []
    kinds = [k for k, needed in (("maps", "maps"), ("ccce", "synth"), ("copypaste", "synth"))
             if needed in config]
    return expand("results/figures/{dataset}_{kind}.png", dataset=dataset, kind=kinds)


def final_outputs():
    outputs = []
    for ds in evaluated_datasets():
        outputs += metrics_files(ds)
        outputs += expand("results/{dataset}/tables/metrics.{ext}", dataset=ds, ext=["csv", "md", "tex"])
        outputs += expand("results/{dataset}/tables/study_{table}.md", dataset=ds, table=study_tables(ds))
        outputs += expand("results/figures/{dataset}_{kind}.png", dataset=ds,
                          kind=["qualitative", "pr_curves", "ap_vs_overlap"])
    for ds in sorted({exp["train"]["dataset"] for exp in EXPERIMENTS.values()}):
        outputs += data_figures(ds)
    for name, gen in GENERATORS.items():
        outputs += [f"results/{gen['dataset']}/gan/{name}/quality.json",
                    f"results/figures/{gen['dataset']}_gan_{name}.png"]
    return outputs


_check_config()

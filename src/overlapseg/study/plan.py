"""What the workflow derives from a resolved study config: which datasets, runs, generators,
inputs, tables and targets exist, and the config slice each job depends on.

The ``.smk`` files hold rules and call these methods from small input functions. Each rule's
``params`` carry only what that job reads (``*_params`` / ``provenance_config`` below), so a
config change reruns exactly the jobs that depend on it.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Callable

from overlapseg.study import paths

TARGET_RULE_NAMES = {"all", "provenance", "verify", "weights", "segment"}  # no experiment or table may be named so
SYNTH_METHODS = ("ccce", "copypaste")
#: overlap-map parameters each variant reads (overlapseg.maps.overlap_maps; every variant
#: fills images without cells with ``background``)
MAP_VARIANT_PARAMS = {"v0": ("background",), "v1": ("background",),
                      "v2": ("background", "overlap_sigma"), "v3": ("background", "overlap_sigma"),
                      "v4": ("background", "log_scale", "max_distance")}
#: the synth.ccce keys that tell discrete from aggregated images (inputs.pool)
POOL_KEYS = ("max_cells_discrete", "max_overlap_ratio")


class StudyPlan:
    """Derivations of one resolved config (``overlapseg.study.config.resolve_profile``)."""

    def __init__(self, config: dict, exists: Callable[[str], bool] = lambda p: Path(p).exists(),
                 warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        self.config = config
        self.skipped: dict[str, str] = {}  # optional datasets left out, and why
        self.datasets = {}
        for name, ds in config["datasets"].items():
            if ds.get("optional") and "demo" not in ds and not exists(ds["raw"]):
                self.skipped[name] = f"{ds['raw']} not found"
                warn(f"config: optional dataset {name!r} skipped: {ds['raw']} not found")
                continue
            self.datasets[name] = ds
        self.experiments, self.seed_runs = self._expand_seeds(config["experiments"])
        #: experiments that train a model (every one except multi-seed aggregates)
        self.runs = [n for n in self.experiments if n not in self.seed_runs]
        self.generators = dict(config.get("gan") or {})

    # ---- experiments ----------------------------------------------------------------------
    def _expand_seeds(self, experiments: dict):
        """An experiment with ``seeds: [s, ...]`` becomes one run per seed (``{name}_seed{s}``,
        rows of their own) plus the experiment itself, whose metrics are the mean and std."""
        out, parents = {}, {}
        for name, exp in experiments.items():
            exp = {**exp, "test": [d for d in exp["test"] if d not in self.skipped]}
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

    def seed(self, name: str) -> int:
        return self.experiments[name].get("seed", self.config["seed"])

    def label(self, name: str) -> str:
        """Row name in the tables: the experiment's resolved ``label:``, default its id."""
        return self.experiments[name].get("label", name)

    def labels(self, names) -> list[str]:
        return [self.label(n) for n in names]

    def seed_runs_of(self, name: str) -> list[str]:
        return list(self.seed_runs.get(name, []))

    def train_dataset(self, name: str) -> str:
        return self.experiments[name]["train"]["dataset"]

    def inputs(self, name: str) -> dict:
        """The experiment's ``inputs:`` block with its defaults (sources, mix, maps, teacher, pool)."""
        spec = self.experiments[name].get("inputs", {})
        return {"sources": list(spec.get("sources", ["original"])), "mix": spec.get("mix"),
                "maps": spec.get("maps"), "teacher": spec.get("teacher"), "pool": spec.get("pool", "all")}

    def model_file(self, name: str) -> str:
        """Models live under the dataset they were trained on (configs may share names)."""
        return paths.model_file(self.train_dataset(name), name)

    def init_from(self, name: str) -> str | None:
        """The experiment a ``params.init: {from: EXPERIMENT}`` warm start reads, if any."""
        init = (self.experiments[name].get("params") or {}).get("init")
        return init.get("from") if isinstance(init, dict) else None

    def pool_options(self, name: str) -> dict:
        """How ``inputs.pool`` tells discrete from aggregated images (as CCCE does); empty for
        experiments that train on every image (they do not depend on these CCCE keys)."""
        if self.inputs(name)["pool"] == "all":
            return {}
        ccce = self.synth_params("ccce")
        return {k: ccce[k] for k in POOL_KEYS if k in ccce}

    def train_inputs(self, name: str, dataset: str) -> dict:
        """Paths the inputs block names: data, splits, synthetic sets, maps, teacher, warm start."""
        ds = self.train_dataset(name)
        if dataset != ds:
            raise ValueError(f"experiment {name!r} trains on {ds!r}, not {dataset!r}")
        spec = self.inputs(name)
        out = {"data": paths.data_dir(ds), "splits": paths.splits_file(ds)}
        synthetic = [s for s in spec["sources"] if s != "original"]
        if synthetic:
            out["synthetic"] = [paths.data_dir(ds, s) for s in synthetic]
        if spec["maps"]:  # map-guided loss: one map set per source
            out["maps"] = [paths.maps_dir(ds, s, spec["maps"]) for s in spec["sources"]]
        if spec["teacher"]:
            out["teacher"] = self.model_file(spec["teacher"])
        init_file = self.init_file(name)
        if init_file:
            out["init"] = init_file
        return out

    def init_file(self, name: str) -> str | None:
        """The file a training job initialises from: another experiment's model (``{from}``),
        the ImageNet weights the ``weights`` rule provides, or a user's file."""
        params = self.experiments[name].get("params") or {}
        init = params.get("init", "scratch")
        if isinstance(init, dict) and "from" in init:
            return self.model_file(init["from"])
        if isinstance(init, dict) and "file" in init:
            return str(init["file"])
        if init == "imagenet":
            from overlapseg.models.weights import imagenet_weights_file

            return paths.weights_file(imagenet_weights_file(f"resnet{params.get('depth', 50)}"))
        return None

    def weights_files(self) -> list[str]:
        """ImageNet weight files some experiment initialises from (rule ``weights``)."""
        return sorted({f for e in self.runs if (f := self.init_file(e)) and f.startswith("resources/weights/")})

    # ---- synthesis, maps, generators --------------------------------------------------------
    def synthetic_sources(self) -> list[str]:
        """Synthetic training sources the config can build: synth methods and GAN generators."""
        return sorted(self.config.get("synth", {})) + sorted(self.generators)

    def synth_params(self, method: str) -> dict:
        return dict(self.config.get("synth", {}).get(method, {}))

    def layout_params(self, method: str) -> dict:
        """A synthesis method's layout parameters without its run keys (n, seed): what GAN
        generators reuse to lay out their own sets."""
        return {k: v for k, v in self.synth_params(method).items() if k not in ("n", "seed")}

    def maps_params(self, variant: str | None = None) -> dict:
        """``config["maps"]``; with a variant, only the parameters that variant reads."""
        params = dict(self.config.get("maps", {}))
        if variant is None:
            return params
        return {k: v for k, v in params.items() if k in MAP_VARIANT_PARAMS[variant]}

    def generator_layout_params(self, name: str) -> dict:
        """Copy-paste layout params for generators that translate copy-paste layouts (pix2pix);
        the others draw their own layouts and do not depend on ``synth.copypaste``."""
        if self.generators[name]["model"] != "pix2pix":
            return {}
        return self.layout_params("copypaste")

    def trained_generator(self, name: str) -> str:
        """The generator whose model makes ``name``'s images (itself, or the one it reuses)."""
        return self.generators[name].get("reuse") or name

    def training_generators(self) -> list[str]:
        return [g for g in self.generators if not self.generators[g].get("reuse")]

    def coarse_to_fine_generators(self) -> list[str]:
        return [g for g in self.training_generators() if self.generators[g]["model"] == "coarse_to_fine"]

    def generator_category(self, name: str):
        """The instance category a generator annotates (its resolved ``category`` param;
        pix2pix generators keep the copy-paste layouts' cells and nuclei: None)."""
        from overlapseg.train.base import get_trainer

        gen = self.generators[name]
        return get_trainer(gen["model"]).resolve_params(gen.get("params")).get("category")

    def gan_model(self, name: str) -> str:
        gen = self.trained_generator(name)
        return paths.gan_model(self.generators[gen]["dataset"], gen)

    # ---- provenance slices ------------------------------------------------------------------
    def source_record(self, dataset: str, source: str) -> dict:
        """Where a synthetic training source lives and what made it (seed, parameters)."""
        if source in self.config.get("synth", {}):
            params = self.synth_params(source)
            return {"source": source, "kind": "synthesis", "path": paths.data_dir(dataset, source),
                    "seed": params.get("seed", self.config["seed"]), "params": params}
        gen = self.generators.get(source, {})
        return {"source": source, "kind": "generator", "path": paths.data_dir(dataset, source),
                "seed": gen.get("seed", self.config["seed"]), "model": gen.get("model"),
                "reuses": gen.get("reuse"), "n": gen.get("n"), "params": gen.get("params", {})}

    def provenance_config(self, name: str) -> dict:
        """The config slice an experiment's numbers depend on (hashed into provenance): the
        experiment, its datasets, the evaluate settings, and only the synthesis, map and pool
        settings its training inputs read."""
        exp = self.experiments[name]
        datasets = sorted({exp["train"]["dataset"], *exp["test"]})
        spec = self.inputs(name)
        out = {"experiment": exp, "datasets": {d: self.datasets[d] for d in datasets},
               "evaluate": self.config.get("evaluate", {}), "seed": self.seed(name)}
        sources = [s for s in spec["sources"] if s != "original"]
        if sources:
            out["sources"] = {s: self.source_record(exp["train"]["dataset"], s) for s in sources}
        if spec["maps"]:
            out["maps"] = self.maps_params(spec["maps"])
        if self.pool_options(name):
            out["pool"] = self.pool_options(name)
        return out

    # ---- evaluation and tables --------------------------------------------------------------
    def experiments_on(self, dataset: str) -> list[str]:
        return [n for n, exp in self.experiments.items() if dataset in exp["test"]]

    def metrics_files(self, dataset: str) -> list[str]:
        return [paths.metrics_file(dataset, n) for n in self.experiments_on(dataset)]

    def figure_experiments(self, dataset: str) -> list[str]:
        """Experiments drawn in the figures (report.figure_experiments; default all)."""
        chosen = self.config["report"].get("figure_experiments")
        on = self.experiments_on(dataset)
        return [e for e in chosen if e in on] if chosen else on

    def evaluated_datasets(self) -> list[str]:
        return sorted({d for exp in self.experiments.values() for d in exp["test"]})

    @property
    def tables(self) -> dict:
        return self.config["report"].get("tables", {})

    def study_tables(self, dataset: str) -> list[str]:
        """Named tables whose experiments are all evaluated on ``dataset``."""
        on = set(self.experiments_on(dataset))
        return [name for name, spec in self.tables.items() if set(spec["experiments"]) <= on]

    def study_table_metrics(self, dataset: str, table: str) -> list[str]:
        return [paths.metrics_file(dataset, e) for e in self.tables[table]["experiments"]]

    def table_files(self, dataset: str) -> list[str]:
        """Stems of the tables written for a dataset: metrics, pixel and study_{name}."""
        return ["metrics", "pixel"] + [f"study_{t}" for t in self.study_tables(dataset)]

    def table_experiments(self, dataset: str, table: str) -> list[str]:
        if table in ("metrics", "pixel"):
            return self.experiments_on(dataset)
        return self.tables[table[len("study_"):]]["experiments"]

    def table_spec(self, table: str) -> dict:
        """kind / preset / classes of a table file (overlapseg.report.study.build_table)."""
        if table == "metrics":
            return {"kind": "instance", "preset": "default"}
        if table == "pixel":
            return {"kind": "pixel"}
        spec = self.tables[table[len("study_"):]]
        return {"kind": spec.get("kind", "instance"), "preset": spec.get("preset", "default"),
                "classes": spec.get("classes")}

    def table_title(self, dataset: str, table: str) -> str:
        if table == "metrics":
            return f"Instance segmentation metrics on {dataset}"
        if table == "pixel":
            return f"Pixel-level semantic metrics on {dataset}"
        spec = self.tables[table[len("study_"):]]
        mixes = [f"{self.label(e)}: {self.mix_caption(e)}" for e in spec["experiments"]
                 if len(self.inputs(e)["sources"]) > 1]
        title = spec.get("title", table)
        return f"{title}; training mix {', '.join(mixes)}" if mixes else title

    def mix_caption(self, name: str) -> str:
        """The experiment's training mix as captions write it (``real:CCCE 1:1``; ``real + CCCE
        uniform by image`` when ``inputs.mix`` is unset; :func:`overlapseg.data.training_sources.mix_caption`)."""
        from overlapseg.data.training_sources import mix_caption

        spec = self.inputs(name)
        return mix_caption(spec["sources"], spec["mix"])

    def caption_info(self, dataset: str, names) -> dict:
        """``caption_info`` of a table (overlapseg.report.captions): the test dataset, its format
        and split preset, each row's resolved training budget (smoke-test rows flagged), the
        training mix of rows with several sources, and the profile's caption notes."""
        from overlapseg.report.captions import caption_rows
        from overlapseg.train.base import get_trainer

        ds = self.config["datasets"][dataset]
        resolved = {e: {**self.experiments[e], "params": get_trainer(self.experiments[e]["model"])
                        .resolve_params(self.experiments[e].get("params"))} for e in names}
        smoke = {e for e in names if self.experiments[e].get("smoke")}
        # rows trained on several sources: their sampling weights (issue 28: captions show them)
        mixes = [f"'{self.label(e)}' {self.mix_caption(e)}" for e in names
                 if len(self.inputs(e)["sources"]) > 1]
        notes = ([f"Training mix (images drawn per source): {'; '.join(mixes)}."] if mixes else [])
        return {"dataset": dataset, "format": ds.get("format"),
                "preset": (ds.get("splits") or {}).get("preset"),
                "rows": caption_rows(resolved, names, smoke=smoke),
                "notes": notes + list(self.config["report"].get("caption_notes") or [])}

    def semantic_from_instances(self, name: str) -> bool:
        """Whether an experiment's pixel metrics come from its instance predictions above the
        chosen threshold (instance models) rather than its own semantic maps."""
        from overlapseg.train.base import get_trainer

        return bool(getattr(get_trainer(self.experiments[name]["model"]), "SEMANTIC_FROM_INSTANCES", False))

    def raw_input(self, dataset: str) -> list[str]:
        """Rendered demo files, or the user's raw folder (a missing folder fails the dry run)."""
        ds = self.datasets[dataset]
        if "demo" in ds:
            return [paths.RAW_DEMO_IMAGES.format(dataset=dataset), paths.RAW_DEMO_GT.format(dataset=dataset)]
        return [ds["raw"]]

    def _run_row(self, e: str, dataset: str) -> dict:
        """The files behind one trained run's metrics on ``dataset``."""
        train_ds = self.train_dataset(e)
        spec = self.inputs(e)
        used = sorted({train_ds, dataset})
        init_from = self.init_from(e)
        return {
            "label": self.label(e), "experiment": e,
            "metrics": paths.metrics_file(dataset, e),
            "predictions": paths.predictions_file(dataset, e),
            "semantic": paths.semantic_dir(dataset, e),
            "model": self.model_file(e), "train_dataset": train_ds, "test_dataset": dataset,
            "splits": {"train": paths.splits_file(train_ds), "test": paths.splits_file(dataset)},
            "data": {d: paths.data_dir(d) for d in used},
            "raw": {d: self.raw_input(d) for d in used},
            "synthetic": [self.source_record(train_ds, s) for s in spec["sources"] if s != "original"],
            "maps": spec["maps"],
            "teacher": {"experiment": spec["teacher"], "model": self.model_file(spec["teacher"])}
                       if spec["teacher"] else None,
            "init": {"experiment": init_from, "model": self.model_file(init_from)} if init_from else None,
        }

    def provenance_rows(self, dataset: str, table: str) -> list[dict]:
        """One dict per table row (overlapseg.provenance); a multi-seed experiment's row holds its
        aggregate metrics file and one such dict per seed run."""
        rows = []
        for e in self.table_experiments(dataset, table):
            runs = self.seed_runs_of(e)
            if runs:
                rows.append({"label": self.label(e), "experiment": e,
                             "metrics": paths.metrics_file(dataset, e),
                             "runs": [self._run_row(r, dataset) for r in runs]})
            else:
                rows.append(self._run_row(e, dataset))
        return rows

    def provenance_inputs(self, dataset: str, table: str) -> dict:
        files = set()
        for row in self.provenance_rows(dataset, table):
            files.add(row["metrics"])
            for r in row.get("runs", [row]):
                files.update([r["metrics"], r["predictions"], r["semantic"], r["model"], *r["splits"].values(),
                              *r["data"].values(), *(p for ps in r["raw"].values() for p in ps),
                              *(s["path"] for s in r["synthetic"])])
                for link in ("teacher", "init"):
                    if r.get(link):
                        files.add(r[link]["model"])
        return {"table": paths.table_file(dataset, table, "csv"), "chain": sorted(files)}

    def provenance_files(self, dataset: str) -> list[str]:
        return [paths.provenance_file(dataset, t) for t in self.table_files(dataset)]

    def data_figures(self, dataset: str) -> list[str]:
        """Figures of the data-side methods (maps, synthesis), for datasets with a train split."""
        if self.datasets[dataset]["splits"].get("preset") == "test-only":
            return []
        kinds = ["maps"] + [m for m in SYNTH_METHODS if m in (self.config.get("synth") or {})]
        return [paths.figure_file(dataset, k) for k in kinds]

    def final_outputs(self) -> list[str]:
        out = []
        for ds in self.evaluated_datasets():
            out += self.metrics_files(ds)
            out += [paths.table_file(ds, "metrics", ext) for ext in ("csv", "md", "tex")]
            out += [paths.table_file(ds, f"study_{t}", "md") for t in self.study_tables(ds)]
            out += [paths.figure_file(ds, k) for k in ("qualitative", "pr_curves", "ap_vs_overlap")]
        for ds in sorted({exp["train"]["dataset"] for exp in self.experiments.values()}):
            out += self.data_figures(ds)
        for name, gen in self.generators.items():
            out += [paths.gan_quality(gen["dataset"], name), paths.figure_file(gen["dataset"], f"gan_{name}")]
        out += [p for ds in self.evaluated_datasets() for p in self.provenance_files(ds)]
        out += [paths.SEGMENT.format(name=name) for name in self.config.get("segment") or {}]
        return out

    # ---- named targets ------------------------------------------------------------------------
    def experiment_targets(self, name: str) -> list[str]:
        """Model(s) and metrics on every test dataset (multi-seed: every seed's model)."""
        models = [self.model_file(r) for r in self.seed_runs_of(name) or [name]]
        return models + [paths.metrics_file(ds, name) for ds in self.experiments[name]["test"]]

    def table_datasets(self, table: str) -> list[str]:
        return [ds for ds in self.evaluated_datasets() if table in self.study_tables(ds)]

    def table_targets(self, table: str) -> list[str]:
        out = []
        for ds in self.table_datasets(table):
            out += [paths.table_file(ds, f"study_{table}", ext) for ext in ("csv", "md", "tex")]
            out.append(paths.provenance_file(ds, f"study_{table}"))
        return out

    def check_target_names(self, rule_names) -> None:
        """Experiment and table rule names must not clash with workflow rules or each other."""
        taken = set(rule_names) | TARGET_RULE_NAMES
        tables = {f"table_{t}": t for t in self.tables}
        for name in self.config["experiments"]:
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
        for table, spec in self.tables.items():
            labels = self.labels(spec["experiments"])
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            if dup:
                raise ValueError(f"config: report table {table!r} has several rows labelled {dup}; "
                                 f"give its experiments distinct `label:`s")

    # ---- cross-references the schema cannot express ------------------------------------------
    def check(self) -> None:
        """Fail before any job runs: unknown sources, teachers, warm starts, trainer params."""
        from overlapseg.train.base import TrainInputs, get_trainer

        known_sources = ["original", *self.synthetic_sources()]
        for name, exp in self.experiments.items():
            spec = exp.get("inputs", {})
            sources = spec.get("sources", ["original"])
            for source in sources:
                if source not in known_sources:
                    raise ValueError(f"config: experiment {name!r} trains on unknown source {source!r} "
                                     f"(known: {', '.join(known_sources)})")
            teacher = spec.get("teacher")
            if teacher is not None and teacher not in self.experiments:
                raise ValueError(f"config: experiment {name!r} names unknown teacher experiment {teacher!r}")
            init_from = self.init_from(name)
            if init_from is not None and init_from not in self.runs:
                raise ValueError(f"config: experiment {name!r}: params.init.from {init_from!r} is not a "
                                 f"trained experiment of the config")
            if spec.get("mix") is not None and len(spec["mix"]) != len(sources):
                raise ValueError(f"config: experiment {name!r}: inputs.mix has {len(spec['mix'])} "
                                 f"weights for {len(sources)} sources")
            try:  # params resolved against the trainer's defaults, inputs checked by the trainer
                get_trainer(exp["model"])(exp.get("params"), 0, "cpu",
                                          TrainInputs([], None, spec.get("mix"), spec.get("maps"),
                                                      teacher and self.model_file(teacher)))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"config: experiment {name!r}: {str(exc).strip(chr(34))}") from None
        self._check_warm_start_cycles()
        for name, gen in self.generators.items():
            if name in self.config.get("synth", {}) or name == "original":
                raise ValueError(f"config: generator name {name!r} clashes with a synthesis method")
            if gen["dataset"] not in self.datasets:
                raise ValueError(f"config: generator {name!r} names unknown dataset {gen['dataset']!r}")
            reuse = gen.get("reuse")
            if reuse is not None and (reuse not in self.generators or self.generators[reuse].get("reuse")):
                raise ValueError(f"config: generator {name!r}: reuse {reuse!r} is not a generator that trains")
            try:
                trainer = get_trainer(gen["model"])
                trainer(gen.get("params"), 0, "cpu")
            except (KeyError, ValueError) as exc:
                raise ValueError(f"config: generator {name!r}: {str(exc).strip(chr(34))}") from None
            if trainer.PRODUCES_INSTANCES:
                raise ValueError(f"config: generator {name!r}: {gen['model']!r} is not a generator")

    def _check_warm_start_cycles(self) -> None:
        for name in self.runs:
            seen, e = [name], self.init_from(name)
            while e is not None:
                if e in seen:
                    raise ValueError(f"config: experiment {name!r}: warm starts form a cycle "
                                     f"({' -> '.join([*seen, e])})")
                seen.append(e)
                e = self.init_from(e) if e in self.experiments else None

    # ---- verify ---------------------------------------------------------------------------------
    def verify_settings(self) -> dict:
        v = dict(self.config.get("verify") or {})
        v["experiments"] = list(v.get("experiments") or [next(iter(self.config["experiments"]))])
        v.setdefault("out", "results/verify")
        v["tolerance"] = float(v.get("tolerance", 0.0))
        out = v["out"].rstrip("/")
        if out in ("", ".", "results") or any(out == f"results/{ds}" or out.startswith(f"results/{ds}/")
                                              for ds in self.datasets):
            raise ValueError(f"config: verify.out {v['out']!r} must be a folder of its own (e.g. results/verify)")
        v["out"] = out
        return v

    def verify_experiments(self) -> list[str]:
        """The verified experiments, their seed runs, teachers and warm starts, in config order."""
        keep, todo = set(), list(self.verify_settings()["experiments"])
        while todo:
            e = todo.pop()
            if e not in keep:
                keep.add(e)
                todo += self.seed_runs_of(e)
                if not self.seed_runs_of(e):
                    todo += [d for d in (self.inputs(e)["teacher"], self.init_from(e)) if d]
        return [e for e in self.experiments if e in keep]

    def verify_config(self) -> dict:
        """The rerun's config: this one, restricted to the verified experiments and their tables."""
        keep = set(self.verify_experiments())
        cfg = copy.deepcopy(self.config)
        cfg["experiments"] = {e: spec for e, spec in cfg["experiments"].items() if e in keep}
        report_cfg = cfg.setdefault("report", {})
        report_cfg["tables"] = {t: s for t, s in report_cfg.get("tables", {}).items() if set(s["experiments"]) <= keep}
        if report_cfg.get("figure_experiments"):
            chosen = [e for e in report_cfg["figure_experiments"] if e in keep]
            if chosen:
                report_cfg["figure_experiments"] = chosen
            else:
                del report_cfg["figure_experiments"]
        cfg["verify"] = self.verify_settings()
        return cfg

    def verify_files(self) -> dict:
        """Paths (relative to both runs) compared: whole files, and tables compared by row."""
        keep = self.verify_experiments()
        datasets = sorted({ds for e in keep for ds in self.experiments[e]["test"]})
        runs = [e for e in keep if not self.seed_runs_of(e)]
        files = {"models": [self.model_file(e) for e in runs],
                 "predictions": [paths.predictions_file(ds, e) for e in runs for ds in self.experiments[e]["test"]],
                 "metrics": [paths.metrics_file(ds, e) for e in keep for ds in self.experiments[e]["test"]],
                 "tables": [], "table_cells": []}
        for ds in datasets:
            files["table_cells"] += [paths.table_file(ds, "metrics", "csv"), paths.table_file(ds, "pixel", "csv")]
            for t in self.study_tables(ds):
                if set(self.tables[t]["experiments"]) <= set(keep):
                    files["tables"] += [paths.table_file(ds, f"study_{t}", ext) for ext in ("csv", "md", "tex")]
        return files

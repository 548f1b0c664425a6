"""The study config: a profile resolved against the experiment catalogue, and every check.

A *profile* (``config.yaml``, ``config/study.yaml``, overlays) says where and how much; the
*catalogue* it names (``catalogue: config/catalogue.yaml``) says what each experiment, generator
and table is. ``resolve_profile`` turns the two into the resolved config every rule reads:
each experiment with its model, label, datasets, threads, inputs and params, where params are
``budgets[model].params`` < the catalogue entry's params < the profile's ``experiments[name]``.

``validate_config`` then checks the result before any job runs; each problem is one
``ValueError`` line naming the config key. Kept free of torch imports except where a trainer
must resolve params (labels, cross-references).
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Callable

from overlapseg.utils.cli import non_finite_path

MAX_MESSAGE = 240  # characters of a schema message (it may quote a whole config section)
PROFILE_ONLY_KEYS = ("catalogue", "defaults", "budgets")
EXPERIMENT_BUDGET_KEYS = {"threads", "params", "smoke"}
GENERATOR_BUDGET_KEYS = {"threads", "params", "n"}
DEFAULT_KEYS = {"dataset", "test", "max_seeds"}
LABEL_FIELDS = ("depth", "iterations", "init")


# ----------------------------------------------------------------------------- resolution
def deep_merge(base: dict, override: dict | None) -> dict:
    """``base`` with ``override`` merged in (nested mappings merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | os.PathLike, what: str) -> dict:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"config: {what} {path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config: {what} {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {what} {path}: must be a mapping")
    return data


def _trainer_params(model: str, params: dict) -> dict:
    from overlapseg.train.base import get_trainer

    return get_trainer(model).resolve_params(params)


def derive_label(name: str, label: str, model: str, params: dict,
                 resolve: Callable[[str, dict], dict] = _trainer_params) -> str:
    """Fill ``{depth}``, ``{iterations}``, ``{init}`` of a label from the resolved params, and
    fail when the label names a backbone depth (``R50``) or budget its params contradict."""
    if "{" not in label and not re.search(r"\bR\d+\b|\d+\s*(?:it|iter|iterations)\b", label):
        return label
    try:
        resolved = resolve(model, params)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"config: experiment {name!r}: {str(exc).strip(chr(34))}") from None
    values = {k: resolved.get(k) for k in LABEL_FIELDS}
    if isinstance(values["init"], dict):  # {from: x} / {file: y} -> a short word for a row name
        values["init"] = next(iter(values["init"]))
    try:
        out = label.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"config: experiment {name!r}: label {label!r} has an unknown field {exc} "
                         f"(known: {', '.join('{' + k + '}' for k in LABEL_FIELDS)})") from None
    for depth in re.findall(r"\bR(\d+)\b", out):
        if resolved.get("depth") is None or int(depth) != int(resolved["depth"]):
            raise ValueError(f"config: experiment {name!r}: label {out!r} names R{depth} but the model's "
                             f"depth is {resolved.get('depth')} (write R{{depth}} to derive it)")
    for iters in re.findall(r"(\d+)\s*(?:it|iter|iterations)\b", out):
        if int(iters) != int(resolved.get("iterations", -1)):
            raise ValueError(f"config: experiment {name!r}: label {out!r} names {iters} iterations but "
                             f"it trains {resolved.get('iterations')} (write {{iterations}} to derive it)")
    return out


def _check_budgets(budgets: dict) -> None:
    from overlapseg.train.base import get_trainer

    if not isinstance(budgets, dict):
        raise ValueError("config: budgets: must be a mapping of model family -> {threads, params}")
    for model, budget in budgets.items():
        try:
            trainer = get_trainer(model)
        except ValueError as exc:
            raise ValueError(f"config: budgets.{model}: {exc}") from None
        allowed = EXPERIMENT_BUDGET_KEYS if trainer.PRODUCES_INSTANCES else GENERATOR_BUDGET_KEYS
        unknown = sorted(set(budget or {}) - allowed)
        if unknown:
            raise ValueError(f"config: budgets.{model}: unknown keys {unknown} (known: {sorted(allowed)})")


def _budget_entry(budgets: dict, model: str | None) -> dict:
    return copy.deepcopy((budgets or {}).get(model) or {}) if model else {}


def _resolve_experiment(name: str, entry: dict, override: dict | None, budgets: dict,
                        defaults: dict) -> dict:
    spec = deep_merge(entry, override)
    budget = _budget_entry(budgets, spec.get("model"))
    params = deep_merge(budget.get("params", {}), entry.get("params"))
    params = deep_merge(params, (override or {}).get("params"))
    out = {k: v for k, v in spec.items() if k != "params"}
    out["params"] = params
    for key in ("threads", "smoke"):
        if key not in out and key in budget:
            out[key] = budget[key]
    if "train" not in out and defaults.get("dataset"):
        out["train"] = {"dataset": defaults["dataset"]}
    if "test" not in out and defaults.get("test"):
        out["test"] = list(defaults["test"])
    seeds = out.get("seeds")
    if seeds and defaults.get("max_seeds"):
        out["seeds"] = seeds = list(seeds)[: int(defaults["max_seeds"])]
    if seeds and len(seeds) == 1:  # one seed: a plain run (no aggregate row, no "(seed s)" label)
        del out["seeds"]
        out.setdefault("seed", seeds[0])
    return out


def _resolve_generator(name: str, entry: dict, override: dict | None, budgets: dict,
                       defaults: dict, catalogue_gan: dict) -> dict:
    spec = deep_merge(entry, override)
    reuse = spec.get("reuse")
    if reuse is not None:  # same trained generator as `reuse`, a set of its own size
        base = catalogue_gan.get(reuse)
        if base is None or base.get("reuse"):
            raise ValueError(f"config: gan.{name}.reuse: {reuse!r} is not a generator that trains")
        spec = {**deep_merge(base, {k: v for k, v in spec.items() if k not in ("reuse", "params")}),
                "reuse": reuse}
    budget = _budget_entry(budgets, spec.get("model"))
    # a reused generator's params are its source's (budget, catalogue and profile), never its own
    params = deep_merge(budget.get("params", {}), catalogue_gan[reuse].get("params") if reuse
                        else deep_merge(entry.get("params") or {}, (override or {}).get("params")))
    out = {k: v for k, v in spec.items() if k != "params"}
    out["params"] = params
    for key in ("n", "threads"):
        if key not in out and key in budget:
            out[key] = budget[key]
    if "dataset" not in out and defaults.get("dataset"):
        out["dataset"] = defaults["dataset"]
    return out


def resolve_profile(config: dict, basedir: str | os.PathLike = ".",
                    resolve: Callable[[str, dict], dict] = _trainer_params) -> dict:
    """The resolved study config of a profile (the input is not modified).

    Without ``catalogue`` the profile's own ``experiments``/``gan`` are complete definitions
    (budgets and defaults still apply). Experiments of the profile that the catalogue does not
    have are added; those it has override the catalogue entry.
    """
    if not isinstance(config, dict):
        raise ValueError("config: must be a mapping (is the config file empty?)")
    cfg = copy.deepcopy(config)
    catalogue_path = cfg.pop("catalogue", None)
    defaults = cfg.pop("defaults", None) or {}
    budgets = cfg.pop("budgets", None) or {}
    unknown = sorted(set(defaults) - DEFAULT_KEYS)
    if unknown:
        raise ValueError(f"config: defaults: unknown keys {unknown} (known: {sorted(DEFAULT_KEYS)})")
    _check_budgets(budgets)
    catalogue: dict[str, Any] = {}
    if catalogue_path:
        path = Path(catalogue_path)
        catalogue = read_yaml(path if path.is_absolute() else Path(basedir) / path, "catalogue")
        unknown = sorted(set(catalogue) - {"experiments", "gan", "tables"})
        if unknown:
            raise ValueError(f"config: catalogue {catalogue_path}: unknown sections {unknown} "
                             "(experiments, gan, tables)")
    own_experiments = cfg.get("experiments") or {}
    own_gan = cfg.get("gan") or {}
    cat_experiments = catalogue.get("experiments") or {}
    cat_gan = catalogue.get("gan") or {}

    experiments = {}
    for name in [*cat_experiments, *(n for n in own_experiments if n not in cat_experiments)]:
        entry, override = (cat_experiments[name], own_experiments.get(name)) if name in cat_experiments \
            else (own_experiments[name], None)
        exp = _resolve_experiment(name, entry or {}, override, budgets, defaults)
        if "label" in exp and "model" in exp:
            exp["label"] = derive_label(name, exp["label"], exp["model"], exp["params"], resolve)
        experiments[name] = exp
    gan = {}
    merged_gan = {n: deep_merge(cat_gan.get(n) or {}, own_gan.get(n)) for n in {**cat_gan, **own_gan}}
    for name in [*cat_gan, *(n for n in own_gan if n not in cat_gan)]:
        entry, override = (cat_gan[name], own_gan.get(name)) if name in cat_gan else (own_gan[name], None)
        gan[name] = _resolve_generator(name, entry or {}, override, budgets, defaults, merged_gan)
    cfg["experiments"] = experiments
    if gan or "gan" in cfg:
        cfg["gan"] = gan
    report = cfg.setdefault("report", {})
    tables = {**copy.deepcopy(catalogue.get("tables") or {}), **(report.get("tables") or {})}
    if tables or "tables" in report:
        report["tables"] = tables
    return cfg


# ----------------------------------------------------------------------------- schema checks
def key_path(parts) -> str:
    """``["datasets", "demo", "splits", "val"]`` -> ``datasets.demo.splits.val``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _schema_error(exc: BaseException):
    """The jsonschema ValidationError behind Snakemake's WorkflowError, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if hasattr(exc, "absolute_path") and hasattr(exc, "message"):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def check_schema(config: dict, schema_path: str | os.PathLike) -> None:
    """Validate against the JSON schema, filling its defaults into ``config`` (in place)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(Path(schema_path).resolve()))
    except WorkflowError as exc:
        err = _schema_error(exc)
        if err is None:
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            raise ValueError(f"config: {' '.join(lines[:2])[:MAX_MESSAGE]}") from None
        message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE] + "..."
        raise ValueError(f"config: {key_path(err.absolute_path)}: {message}") from None


def check_finite(config: dict) -> None:
    bad = non_finite_path(config)
    if bad:
        raise ValueError(f"config: {bad}: must be a finite number (NaN and infinity are not allowed)")


def check_split_fractions(config: dict) -> None:
    """val/test fractions that leave training images (what ``splits.split_names`` needs)."""
    for name, ds in config.get("datasets", {}).items():
        splits = ds.get("splits") or {}
        preset = splits.get("preset")
        val, test = splits.get("val", 0.2), splits.get("test", 0.2)
        where = f"config: datasets.{name}.splits"
        if preset is None:
            if test >= 1:
                raise ValueError(f"{where}.test: {test} leaves no training images (for a dataset "
                                 "only evaluated on, set preset: test-only)")
            if val + test >= 1:
                raise ValueError(f"{where}: val + test = {val} + {test} must be below 1 (the rest "
                                 "is the training split)")
        elif preset == "subsets" and val >= 1:
            raise ValueError(f"{where}.val: {val} leaves no training images (preset subsets "
                             "carves val out of the raw train subset; it must be below 1)")


def check_adapter_options(config: dict) -> None:
    from overlapseg.data.adapters import check_adapter_options as check

    for name, ds in config.get("datasets", {}).items():
        check(ds["format"], ds.get("options") or {}, f"config: datasets.{name}.options")


def check_references(config: dict) -> None:
    """Every name that must refer to something does, checked at load (issue: a misspelt
    dataset or experiment name used to surface as a KeyError traceback or a dropped figure)."""
    datasets = set(config.get("datasets", {}))
    experiments = config.get("experiments", {})
    known_ds = ", ".join(sorted(datasets))
    for name, exp in experiments.items():
        train = (exp.get("train") or {}).get("dataset")
        if train not in datasets:
            raise ValueError(f"config: experiment {name!r}: train.dataset {train!r} is not a dataset "
                             f"of the config (known: {known_ds})")
        for ds in exp.get("test", []):
            if ds not in datasets:
                raise ValueError(f"config: experiment {name!r}: test dataset {ds!r} is not a dataset "
                                 f"of the config (known: {known_ds})")
    for name, gen in (config.get("gan") or {}).items():
        if gen.get("dataset") not in datasets:
            raise ValueError(f"config: generator {name!r}: dataset {gen.get('dataset')!r} is not a "
                             f"dataset of the config (known: {known_ds})")
    report = config.get("report") or {}
    for e in report.get("figure_experiments") or []:
        if e not in experiments:
            raise ValueError(f"config: report.figure_experiments: unknown experiment {e!r}")
    for table, spec in (report.get("tables") or {}).items():
        unknown = [e for e in spec.get("experiments", []) if e not in experiments]
        if unknown:
            raise ValueError(f"config: report table {table!r} names unknown experiments {unknown}")
    segment = config.get("segment") or {}
    for name, spec in segment.items():
        if spec.get("model") not in experiments:
            raise ValueError(f"config: segment.{name}.model: unknown experiment {spec.get('model')!r}")
    verify = config.get("verify") or {}
    unknown = [e for e in verify.get("experiments") or [] if e not in experiments]
    if unknown:
        raise ValueError(f"config: verify.experiments names unknown experiments {unknown} "
                         f"(experiments of the config; a seed run is verified through its experiment)")


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Check a resolved ``config`` (defaults filled in place, as ``snakemake.utils.validate``
    does) and return it; the first problem raises a one-line ValueError naming the key."""
    if not isinstance(config, dict):
        raise ValueError("config: must be a mapping (is the config file empty?)")
    check_finite(config)
    check_schema(config, schema_path)
    check_split_fractions(config)
    check_adapter_options(config)
    check_references(config)
    return config


def load_study(profiles, basedir: str | os.PathLike, schema_path: str | os.PathLike | None = None) -> dict:
    """Profiles (paths, merged in order as ``--configfile a b`` does) resolved and validated."""
    merged: dict = {}
    for path in [profiles] if isinstance(profiles, (str, os.PathLike)) else profiles:
        merged = deep_merge(merged, read_yaml(path, "config file"))
    schema_path = schema_path or Path(basedir) / "workflow" / "schemas" / "config.schema.yaml"
    return validate_config(resolve_profile(merged, basedir), schema_path)


def load_config(path: str | os.PathLike, schema_path: str | os.PathLike) -> dict[str, Any]:
    """Read one YAML config file, resolve and ``validate_config`` it (for tests and tools)."""
    config = read_yaml(path, "config file")
    basedir = Path(schema_path).resolve().parents[2]
    return validate_config(resolve_profile(config, basedir), schema_path)

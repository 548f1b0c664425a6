"""Checking the workflow config before any job runs (the Snakefile calls ``validate_config``).

Each problem ends in one ``ValueError`` line naming the config key: schema violations (the
first message and the key's path, not jsonschema's dump of the schema), NaN or infinite
numbers (YAML ``.nan`` passes every ``minimum``/``maximum`` test of a schema), split fractions
that leave no training images, and adapter options the dataset's format does not know.
Kept free of heavy imports: it runs when Snakemake parses the workflow.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from overlapseg.utils.cli import non_finite_path

MAX_MESSAGE = 240  # characters of a schema message (it may quote a whole config section)


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


def validate_config(config: dict, schema_path: str | os.PathLike) -> dict:
    """Check ``config`` (defaults filled in place, as ``snakemake.utils.validate`` does) and
    return it; the first problem raises a one-line ValueError naming the key."""
    if not isinstance(config, dict):
        raise ValueError("config: must be a mapping (is the config file empty?)")
    check_finite(config)
    check_schema(config, schema_path)
    check_split_fractions(config)
    check_adapter_options(config)
    return config


def load_config(path: str | os.PathLike, schema_path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file and ``validate_config`` it (for tests and tools)."""
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return validate_config(config, schema_path)

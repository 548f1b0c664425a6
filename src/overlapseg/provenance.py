"""Provenance records: which data, code, config and seed produced a number."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from overlapseg.utils.io import dumps_json, file_record, sha256_file, tree_record  # noqa: F401 - re-exported

PACKAGES = ("overlapseg", "torch", "torchvision", "numpy", "scipy", "scikit-image", "pycocotools",
            "opencv-python-headless", "pandas", "snakemake")


def git_commit(cwd: str | os.PathLike | None = None) -> dict:
    """HEAD commit of the repository holding the code, and whether the tree had local changes."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def config_hash(config: dict) -> str:
    return hashlib.sha256(dumps_json(config).encode()).hexdigest()[:16]


def input_checksums(paths) -> dict[str, str]:
    """sha256 of every input file (directories: of each file inside, sorted)."""
    out: dict[str, str] = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[str(f)] = sha256_file(f)
    return out


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict, inputs, seed: int, experiment: str | None = None) -> dict:
    """A record whose ``id`` changes whenever the config, the inputs or the code change.

    The id excludes the wall clock and host so that reruns give byte-identical metrics files.
    """
    record = {
        "experiment": experiment,
        "seed": seed,
        "config_hash": config_hash(config),
        "git": git_commit(),
        "inputs": input_checksums(inputs),
        "packages": package_versions(),
        "python": platform.python_version(),
    }
    record["id"] = hashlib.sha256(dumps_json(record).encode()).hexdigest()[:12]
    return record


# ----------------------------------------------------------------------------- table audit
# A table's provenance file (results/{dataset}/tables/{table}.provenance.json, rule
# `provenance`) maps every number of the table (row label x column) to the chain behind it:
# metrics file -> predictions -> model.pt (sha256, resolved params, seed) -> timing.json
# (device, wall time) -> splits (ids) -> canonical data and raw files (checksums) ->
# synthetic sources (seed, parameters) and the code/package versions of the metrics record.
# `overlapseg audit TABLE.csv --row LABEL --column METRIC` prints one cell's chain.
PROVENANCE_FORMAT = 1
MAX_LISTED_FILES = 200  # folders with more files are recorded as one digest


def raw_record(paths) -> dict:
    """sha256 of each raw file (a folder: of each file inside; many files: one folder digest)."""
    out: dict = {}
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if len(files) > MAX_LISTED_FILES:
                out[str(path)] = tree_record(path)
                continue
        else:
            files = [path]
        for f in files:
            out[str(f)] = sha256_file(f)
    return out


def model_record(path: str | os.PathLike) -> dict:
    """Checksum and the training record stored in an overlapseg ``model.pt`` (no weights)."""
    import torch

    record = file_record(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise ValueError(f"{path}: unreadable model file ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "params" not in state:
        raise ValueError(f"{path}: not an overlapseg model file (no params)")
    weights = state.get("state_dict") or {}
    record.update({k: state.get(k) for k in ("format", "trainer", "seed", "iterations", "inputs", "params",
                                             "init")})
    record["n_parameters"] = int(sum(v.numel() for v in weights.values() if hasattr(v, "numel")))
    return record


def timing_record(model_dir: str | os.PathLike) -> dict | None:
    """The model folder's ``timing.json`` (device, threads, wall time of the training run)."""
    path = Path(model_dir) / "timing.json"
    if not path.is_file():
        return None
    from overlapseg.utils.io import read_json

    return {"path": str(path), **read_json(path)}


def splits_record(path: str | os.PathLike, parts=("train", "val", "test")) -> dict:
    from overlapseg.utils.io import read_json

    splits = read_json(path)
    protocol = {"protocol": splits["protocol"]} if "protocol" in splits else {}
    return {**file_record(path), **protocol, **{k: list(splits.get(k, [])) for k in parts}}


def test_split_record(path: str | os.PathLike) -> dict:
    return splits_record(path, ("test",))


class _Cache:
    """Checksums computed once per job (tables share datasets and models)."""

    def __init__(self):
        self.memo: dict = {}

    def __call__(self, fn, arg):
        key = (fn.__name__, str(arg) if not isinstance(arg, (list, tuple)) else tuple(map(str, arg)))
        if key not in self.memo:
            self.memo[key] = fn(arg)
        return self.memo[key]


def row_chain(row: dict, cache: _Cache | None = None) -> dict:
    """:func:`experiment_chain`, or for a multi-seed row (``runs``) the aggregate metrics file
    and the chain of every seed run."""
    if not row.get("runs"):
        return experiment_chain(row, cache)
    from overlapseg.utils.io import read_json

    cache = cache or _Cache()
    return {"metrics": file_record(row["metrics"]), "seeds": read_json(row["metrics"]).get("seeds"),
            "runs": {r["experiment"]: experiment_chain(r, cache) for r in row["runs"]}}


def experiment_chain(row: dict, cache: _Cache | None = None) -> dict:
    """Everything behind one table row (``row`` as the provenance rule passes it).

    Keys of ``row``: experiment, metrics, predictions, semantic, model, train_dataset,
    test_dataset, splits {train, test}, data {dataset: folder}, raw {dataset: [paths]},
    synthetic [{source, path, seed, params}], maps (variant or None), teacher (None or
    {experiment, model}).
    """
    from overlapseg.utils.io import read_json

    cache = cache or _Cache()
    metrics = read_json(row["metrics"])
    prov = metrics.get("provenance") or {}
    model = cache(model_record, row["model"])
    timing = timing_record(Path(row["model"]).parent)
    train_ds, test_ds = row["train_dataset"], row["test_dataset"]
    splits = {"train_dataset": {"dataset": train_ds,
                                **cache(splits_record, row["splits"]["train"])}}
    if test_ds != train_ds:
        splits["test_dataset"] = {"dataset": test_ds, **cache(test_split_record, row["splits"]["test"])}
    datasets = {ds: {"data": cache(tree_record, folder), "raw": cache(raw_record, row["raw"].get(ds, []))}
                for ds, folder in sorted(row["data"].items())}
    synthetic = [{**s, **cache(tree_record, s["path"])} for s in row.get("synthetic", [])]
    chain = {
        "metrics": file_record(row["metrics"]),
        "predictions": file_record(row["predictions"]),
        "semantic": cache(tree_record, row["semantic"]) if row.get("semantic") else None,
        "model": model,
        "training": timing,
        "device": (timing or {}).get("device"),
        "wall_time_s": (timing or {}).get("seconds"),
        "splits": splits,
        "datasets": datasets,
        "synthetic": synthetic,
        "maps": row.get("maps"),
        "teacher": ({"experiment": row["teacher"]["experiment"],
                     **file_record(row["teacher"]["model"])} if row.get("teacher") else None),
        "code": prov.get("git"),
        "packages": prov.get("packages"),
        "python": prov.get("python"),
        "config_hash": prov.get("config_hash"),
        "seed": prov.get("seed", model.get("seed")),
        "provenance_id": prov.get("id"),
        # files the metrics were computed from (ground truth, predictions); the semantic maps
        # are summarised by the "semantic" tree digest above
        "evaluated_inputs": {k: v for k, v in (prov.get("inputs") or {}).items()
                             if not (row.get("semantic") and Path(k).parent == Path(row["semantic"]))},
    }
    return chain


def table_provenance(table_csv: str | os.PathLike, spec: dict, rows: list[dict], dataset: str,
                     name: str = "", title: str = "") -> dict:
    """The provenance map of one written table; fails if the CSV is not what its metrics give.

    ``spec``: kind / preset / classes of the table (``overlapseg.report.study.build_table``);
    ``rows``: one dict per row in table order (``label``, ``experiment`` + the keys of
    :func:`experiment_chain`, or ``metrics`` + ``runs`` for a multi-seed row).
    """
    from overlapseg.report.study import build_table
    from overlapseg.report.tables import to_csv
    from overlapseg.utils.io import read_json

    table_csv = Path(table_csv)
    metrics = [read_json(r["metrics"]) for r in rows]
    table = build_table(spec, metrics, [r["experiment"] for r in rows], [r["label"] for r in rows])
    written = table_csv.read_text() if table_csv.is_file() else None
    if written is None:
        raise FileNotFoundError(f"{table_csv}: table not found")
    if written != to_csv(table):
        raise ValueError(f"{table_csv}: does not match the table rebuilt from its metrics files "
                         "(stale or edited by hand); rebuild the table")
    labels = table.labels
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    cache = _Cache()
    out_rows = {}
    for i, row in enumerate(rows):
        cells = {}
        for j, col in enumerate(table.column_names):
            path = table.paths[j]
            raw = metrics[i]
            for key in path:
                raw = raw.get(key) if isinstance(raw, dict) else None
            cells[col] = {"value": table.cell(i, j), "metric": raw,
                          "key": ".".join(path), "scale": table.scale,
                          "status": table.status[i][j] or "ok"}
        key = labels[i] if labels[i] not in dup else f"{labels[i]} [{row['experiment']}]"
        out_rows[key] = {"label": labels[i], "experiment": row["experiment"],
                         "provenance_id": table.provenance[i], "cells": cells,
                         "chain": row_chain(row, cache)}
    return {
        "format": PROVENANCE_FORMAT,
        "table": {"csv": str(table_csv), "sha256": sha256_file(table_csv), "name": name or table_csv.stem,
                  "dataset": dataset, "title": title, "kind": spec.get("kind", "instance"),
                  "preset": spec.get("preset"), "classes": spec.get("classes"),
                  "columns": table.column_names, "scale": table.scale, "digits": table.digits},
        "row_order": list(out_rows),  # JSON keys are written sorted; this is the table's order
        "rows": out_rows,
    }

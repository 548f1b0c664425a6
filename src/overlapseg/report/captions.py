"""Table captions that say what a reader needs to trust the numbers.

A caption names the dataset and what its ground truth annotates (read from the metrics:
``n_gt`` per category, never guessed from the dataset's name), the split (the protocol and
train/val/test image counts ``splits.json`` records), the number of test images, and each row's
training budget (model family, iterations, batch size, initialisation, seeds), rows with the
same budget grouped. Rows whose budget is a smoke test are flagged: their numbers prove that
the stage runs and are not results. The legend of the table itself (number format, bold rule,
markers, omitted columns) is appended by :func:`overlapseg.report.tables.caption_lines`.

``caption_info`` (all keys optional)::

    {"dataset": "demo", "format": "isbi2014", "splits": "results/demo/splits.json",
     "preset": None,             # configured split preset (splits.json's ``protocol`` wins)
     "rows": [{"label": "SE-U-Net, 4 heads", "model": "seunet", "iterations": 40,
               "batch_size": 4, "init": "scratch", "seeds": [0], "smoke": False,
               "train_dataset": "demo"}, ...],
     "notes": ["free text, one sentence each"]}

:func:`caption_rows` builds ``rows`` from the workflow's resolved experiments.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from overlapseg.report.tables import Table
from overlapseg.utils.io import read_json

SPLIT_ROLES = ("train", "val", "test")


def read_splits(splits: str | os.PathLike) -> dict:
    """Images per split role of a ``splits.json`` and the ``protocol`` it records (None for
    files written before it did); a bad file is one line naming it."""
    data = read_json(splits)
    if not isinstance(data, dict) or not all(isinstance(data.get(r, []), list) for r in SPLIT_ROLES):
        raise ValueError(f"{splits}: not a splits file (lists of image names under train/val/test)")
    return {**{r: len(data.get(r, [])) for r in SPLIT_ROLES}, "protocol": data.get("protocol")}


def _split_words(protocol: str | None) -> str:
    if protocol in (None, "fractions"):
        return "stratified random split"
    if protocol == "pooled":
        return "stratified random split over the raw train and test subsets (pooled)"
    return f"split protocol {protocol}"


def format_init(init: Any, labels: Mapping[str, str] | None = None) -> str:
    """What a row's weights started from, in words (the ``init`` param of the trainers)."""
    if init in (None, "scratch"):
        return "from scratch"
    if init == "imagenet":
        return "ImageNet backbone"
    if isinstance(init, dict) and "file" in init:
        return f"weights file {os.path.basename(str(init['file']))}"
    if isinstance(init, dict) and "from" in init:
        src = init["from"]
        name = f"'{labels[src]}'" if labels and src in labels else str(src)
        part = init.get("part", "all")
        return f"warm start from {name}" + ("" if part == "all" else f" ({part})")
    return str(init)


def caption_rows(experiments: Mapping[str, dict], names: Sequence[str],
                 smoke: bool | Iterable[str] = False) -> list[dict]:
    """``caption_info["rows"]`` of ``names`` from resolved experiment entries (``model``,
    ``label``, ``train.dataset``, ``params.iterations/batch_size/input_scale/init``, ``seed`` or
    ``seeds``).
    ``smoke``: True (every row) or the names whose budget is a smoke test."""
    smoke_names = set(names) if smoke is True else set(smoke or ())
    rows = []
    for name in names:
        exp = experiments[name]
        params = exp.get("params") or {}
        seeds = exp.get("seeds") or [exp.get("seed", 0)]
        rows.append({"name": name, "label": exp.get("label", name), "model": exp.get("model"),
                     "iterations": params.get("iterations"), "batch_size": params.get("batch_size"),
                     "input_scale": params.get("input_scale"),
                     "init": params.get("init", "scratch"), "seeds": list(seeds),
                     "smoke": name in smoke_names,
                     "train_dataset": (exp.get("train") or {}).get("dataset")})
    return rows


def _seeds(seeds: Sequence) -> str:
    seeds = list(seeds or [])
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))}; mean ± std)" if seeds else ""


def _budget(row: dict, labels: Mapping[str, str], test_dataset: str = "") -> str:
    parts = [str(row["model"]) if row.get("model") else "",
             (f"{row['iterations']} iteration{'' if row['iterations'] == 1 else 's'}"
              if row.get("iterations") is not None else ""),
             f"batch {row['batch_size']}" if row.get("batch_size") is not None else "",
             (f"images resampled x{row['input_scale']:g}"
              if row.get("input_scale") not in (None, 1) else ""),
             format_init(row.get("init"), labels) if "init" in row else "",
             _seeds(row.get("seeds") or []),
             f"trained on {row['train_dataset']}" if row.get("train_dataset") not in (None, test_dataset) else ""]
    return ", ".join(p for p in parts if p)


def _quoted(labels: Sequence[str]) -> str:
    return ", ".join(f"'{lab}'" for lab in labels)


def dataset_line(table: Table, info: Mapping) -> str:
    """Dataset, what its ground truth annotates, split preset, image counts."""
    dataset = info.get("dataset") or ""
    what = []
    gt = table.gt_categories
    if gt == ["nucleus"]:
        kind = "real EDF images, nuclei only" if info.get("format") == "isbi2014-edf" else "nuclei only"
        what.append(f"{kind}: the ground truth annotates no cytoplasm")
    elif gt == ["cytoplasm"]:
        what.append("cytoplasm only: the ground truth annotates no nuclei")
    counts = read_splits(info["splits"]) if info.get("splits") else None
    n_test = info.get("n_test", counts["test"] if counts else None)
    # the protocol splits.json records (what produced the file) over the configured preset
    split = _split_words((counts or {}).get("protocol") or info.get("preset"))
    if counts:
        split += f", train/val/test {counts['train']}/{counts['val']}/{counts['test']} images"
    head = f"Test images: {n_test} of {dataset}" if n_test is not None else f"Dataset: {dataset}"
    if not dataset and n_test is None and not what:
        return ""
    return head + (f" ({'; '.join(what)})" if what else "") + f"; {split}."


def budget_lines(rows: Sequence[dict], test_dataset: str = "") -> list[str]:
    """One line per group of rows with the same budget; smoke-test rows flagged. The training
    dataset is named when it is not the test dataset (e.g. models tested on EDF images)."""
    if not rows:
        return []
    labels = {r["name"]: r["label"] for r in rows if r.get("name")}
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(_budget(r, labels, test_dataset), []).append(r["label"])
    if len(groups) == 1:
        (budget,) = groups
        lines = [f"Training (every row): {budget}." if budget else ""]
    else:
        lines = ["Training: " + "; ".join(f"{_quoted(labs)}: {b or 'budget not given'}"
                                          for b, labs in groups.items()) + "."]
    smoke = [r["label"] for r in rows if r.get("smoke")]
    if smoke:
        who = "every row" if len(smoke) == len(rows) else _quoted(smoke)
        lines.append(f"Smoke test ({who}): a budget that only proves the stage runs; "
                     "these numbers are not results.")
    return [line for line in lines if line]


def table_caption(title: str, table: Table, info: Mapping | None = None) -> list[str]:
    """Caption lines of ``table``: title, dataset and split, budgets, smoke note, free notes."""
    info = dict(info or {})
    title = title.strip()
    lines = [title if not title or title.endswith(".") else title + "."]
    lines.append(dataset_line(table, info))
    lines += budget_lines(info.get("rows") or [], info.get("dataset") or "")
    lines += [str(n) for n in info.get("notes") or []]
    return [line for line in lines if line]

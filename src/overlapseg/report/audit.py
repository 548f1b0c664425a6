"""``overlapseg audit TABLE.csv --row LABEL --column METRIC``: where one table number came from.

Reads the table's provenance file (``TABLE.provenance.json`` next to the CSV, written by the
workflow's ``provenance`` rule, :func:`overlapseg.provenance.table_provenance`), picks the
cell, re-hashes every file and folder of its chain (table, metrics, predictions, semantic
maps, model, splits, dataset, raw files, synthetic sources) unless ``--no-check``, and prints
the chain: value -> metrics key -> metrics file -> predictions -> model.pt (sha256, resolved
params, initialisation) -> training device and wall time -> splits -> dataset and raw checksums
-> synthetic sources -> code and package versions.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from overlapseg.utils.io import read_json, sha256_file, tree_record

MAX_IDS = 12  # split ids printed (all of them with --json)


def provenance_path(table: str | os.PathLike) -> Path:
    """``dir/NAME.provenance.json`` for ``dir/NAME.csv`` (or ``.md`` / ``.tex``)."""
    table = Path(table)
    return table.with_name(f"{table.stem}.provenance.json")


def _root(table_csv: Path, recorded: str) -> Path:
    """The workflow directory the recorded (relative) paths start from."""
    here = table_csv.resolve()
    rec = Path(recorded)
    if rec.is_absolute():
        return Path("/")
    parts = rec.parts
    if here.parts[-len(parts):] == parts:
        return Path(*here.parts[:-len(parts)])
    return Path.cwd()


def find_row(record: dict, row: str) -> str:
    """Key of the row whose label (or experiment id) is ``row``; ambiguous or unknown: error."""
    rows = record["rows"]
    if row in rows:
        return row
    by_label = [k for k, r in rows.items() if r["label"] == row]
    by_id = [k for k, r in rows.items() if r["experiment"] == row]
    by_fold = [k for k, r in rows.items() if r["label"].casefold() == row.casefold()]
    for found in (by_label, by_id, by_fold):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"row {row!r} is ambiguous: experiments "
                             f"{', '.join(rows[k]['experiment'] for k in found)}; pass the experiment id")
    order = record.get("row_order") or list(rows)
    raise ValueError(f"{record['table']['csv']}: no row {row!r}; rows: "
                     + "; ".join(f"{rows[k]['label']!r} ({rows[k]['experiment']})" for k in order))


def find_column(columns: list[str], column: str) -> str:
    """``group/key`` as in the CSV header; also ``group key`` or a key that only one group has."""
    if column in columns:
        return column
    norm = column.strip().replace(" ", "/").casefold()
    found = [c for c in columns if c.casefold() == norm]
    if not found and "/" not in norm:
        found = [c for c in columns if c.split("/", 1)[1].casefold() == norm]
    if len(found) == 1:
        return found[0]
    what = "ambiguous" if found else "unknown"
    raise ValueError(f"{what} column {column!r}; columns: {', '.join(found or columns)}")


def _csv_cell(table_csv: Path, experiment: str, column: str) -> str | None:
    with open(table_csv, newline="") as f:
        for line in csv.DictReader(f):
            if line.get("experiment") == experiment:
                return line.get(column)
    return None


def _check(root: Path, entry: dict | None) -> str:
    if not entry or "sha256" not in entry:
        return ""
    path = root / entry["path"]
    if not path.is_file():
        return "MISSING"
    return "ok" if sha256_file(path) == entry["sha256"] else "CHANGED since the table was built"


def _check_tree(root: Path, path: str, digest: dict | str, cache: dict) -> str:
    """Re-hash a recorded folder (tree sha256) or file; ``digest`` as ``tree_record`` /
    ``raw_record`` wrote it. ``cache``: one hash per path (seed runs share datasets)."""
    if path not in cache:
        full = root / path
        cache[path] = (None if not full.exists() else
                       sha256_file(full) if full.is_file() else tree_record(full)["sha256_tree"])
    now = cache[path]
    want = digest if isinstance(digest, str) else digest.get("sha256_tree", digest.get("sha256"))
    if now is None:
        return "MISSING"
    return "ok" if now == want else "CHANGED since the table was built"


def _check_inputs(root: Path, ch: dict, prefix: str, cache: dict) -> dict[str, str]:
    """Checks of the run's semantic maps, splits, datasets, raw files and synthetic sources."""
    out = {}
    if ch.get("semantic"):
        out[prefix + "semantic"] = _check_tree(root, ch["semantic"]["path"], ch["semantic"], cache)
    for part, sp in ch.get("splits", {}).items():
        out[f"{prefix}splits {part}"] = _check_tree(root, sp["path"], sp, cache)
    for ds, rec in ch.get("datasets", {}).items():
        out[f"{prefix}dataset {ds}"] = _check_tree(root, rec["data"]["path"], rec["data"], cache)
        for path, digest in rec["raw"].items():
            out[f"{prefix}raw {path}"] = _check_tree(root, path, digest, cache)
    for syn in ch.get("synthetic") or []:
        out[f"{prefix}synthetic {syn['source']}"] = _check_tree(root, syn["path"], syn, cache)
    return out


def audit_cell(table: str | os.PathLike, row: str, column: str, check: bool = True) -> dict:
    """The cell's value, its chain and (``check``) whether the files still match their checksums."""
    table = Path(table)
    prov_file = provenance_path(table)
    if not prov_file.is_file():
        raise FileNotFoundError(f"{prov_file}: no provenance file for this table (build it with "
                                f"`snakemake {prov_file}` or the table's target)")
    record = read_json(prov_file)
    if "rows" not in record or "table" not in record:
        raise ValueError(f"{prov_file}: not a table provenance file")
    key = find_row(record, row)
    col = find_column(record["table"]["columns"], column)
    entry = record["rows"][key]
    root = _root(table.with_suffix(".csv"), record["table"]["csv"])
    out = {"table": record["table"], "provenance_file": str(prov_file), "row": entry["label"],
           "experiment": entry["experiment"], "provenance_id": entry["provenance_id"], "column": col,
           "cell": entry["cells"][col], "chain": entry["chain"], "checks": {}}
    if check:
        chain = entry["chain"]
        table_csv = root / record["table"]["csv"]
        checks = {"table": _check(root, {"path": record["table"]["csv"], "sha256": record["table"]["sha256"]}),
                  "metrics": _check(root, chain.get("metrics"))}
        cache: dict = {}
        for run, ch in _runs(chain):
            prefix = f"{run} " if run else ""
            for name in ("metrics", "predictions", "model", "teacher"):
                if ch.get(name) and (prefix or name != "metrics"):
                    checks[prefix + name] = _check(root, ch[name])
            checks.update(_check_inputs(root, ch, prefix, cache))
        if table_csv.is_file():
            shown = _csv_cell(table_csv, entry["experiment"], col)
            checks["cell"] = ("ok" if shown == entry["cells"][col]["value"]
                              else f"CHANGED: the table shows {shown!r}")
        out["checks"] = checks
    return out


def _runs(chain: dict) -> list[tuple[str, dict]]:
    """("", chain) for a single run; (seed run name, chain) for each run of a multi-seed row."""
    if "runs" in chain:
        return list(chain["runs"].items())
    return [("", chain)]


def _short(params: dict | None) -> str:
    return json.dumps(params, sort_keys=True, separators=(", ", ": ")) if params else "-"


def format_init(init: dict | None, asked=None) -> str:
    """One line: what the model's weights started from (``model.pt``'s resolved init)."""
    if not init:
        return "scratch" if asked in (None, "scratch") else f"{asked!r} (no resolved init in model.pt)"
    kind = init.get("kind")
    if kind == "scratch":
        return "scratch (random weights)"
    loaded = f", {init['loaded']} tensors loaded" if init.get("loaded") is not None else ""
    if kind in ("imagenet", "file"):
        return (f"{kind}: {init.get('arch')} weights {init.get('file')}  sha256 {init.get('sha256')}"
                f"{loaded} (FrozenBN, ImageNet normalisation)")
    if kind == "from":
        skipped = f", {init['skipped']} skipped" if init.get("skipped") is not None else ""
        src = init.get("source_init") or {}
        chain = f"; source started from {src.get('kind')}" + (
            f" {src.get('file')} sha256 {src.get('sha256')}" if src.get("sha256") else "") if src else ""
        return (f"warm start from experiment {init.get('source')} (part {init.get('part')}): "
                f"{init.get('file')}  sha256 {init.get('sha256')}{loaded}{skipped}{chain}")
    return json.dumps(init, sort_keys=True)


def format_audit(a: dict) -> str:
    """The chain of one cell as aligned text lines."""
    c, ch, ok = a["cell"], a["chain"], a["checks"]
    lines: list[str] = []

    def add(name: str, text: str, check: str = "") -> None:
        lines.append(f"{name:<12} {text}" + (f"  [{check}]" if check else ""))

    add("table", f"{a['table']['csv']}  ({a['table']['title'] or a['table']['name']})", ok.get("table", ""))
    add("cell", f"row {a['row']!r} x column {a['column']!r} = {c['value']}", ok.get("cell", ""))
    scale = "" if c["scale"] == 1 else f"{c['scale']:g} x "
    metric = "null" if c["metric"] is None else repr(c["metric"])
    note = "" if c["status"] == "ok" else f"  (shown as {c['value']}: {c['status']})"
    add("value", f"{scale}metrics[{c['key']}] = {metric}{note}")
    add("experiment", f"{a['experiment']}  provenance id {a['provenance_id']}")
    add("metrics", f"{ch['metrics']['path']}  sha256 {ch['metrics']['sha256']}", ok.get("metrics", ""))
    for run, rch in _runs(ch):
        if run:
            lines.append(f"--- seed run {run} (seed {rch.get('seed')})")
            add("metrics", f"{rch['metrics']['path']}  sha256 {rch['metrics']['sha256']}",
                ok.get(f"{run} metrics", ""))
        _format_run(rch, ok, f"{run} " if run else "", add)
    return "\n".join(lines) + "\n"


def _format_run(ch: dict, ok: dict, prefix: str, add) -> None:
    add("predictions", f"{ch['predictions']['path']}  sha256 {ch['predictions']['sha256']}",
        ok.get(prefix + "predictions", ""))
    if ch.get("semantic"):
        s = ch["semantic"]
        add("semantic", f"{s['path']}  {s['files']} files, tree sha256 {s['sha256_tree']}",
            ok.get(prefix + "semantic", ""))
    m = ch["model"]
    add("model", f"{m['path']}  sha256 {m['sha256']}", ok.get(prefix + "model", ""))
    add("", f"trainer {m.get('trainer')}, seed {m.get('seed')}, {m.get('iterations')} iterations, "
            f"{m.get('n_parameters')} parameters")
    add("params", _short(m.get("params")) + "  (resolved, from model.pt)")
    add("init", format_init(m.get("init"), (m.get("params") or {}).get("init")))
    t = ch.get("training")
    if t:
        add("training", f"device {t.get('device')}, {t.get('threads')} threads, {t.get('iterations_run')} "
                        f"iterations in {t.get('seconds')} s wall  ({t['path']})")
    else:
        add("training", "no timing.json in the model folder (device and wall time unknown)")
    inputs = m.get("inputs") or {}
    add("inputs", f"sources {', '.join(inputs.get('sources') or ['original'])}; maps {ch.get('maps') or '-'}; "
                  f"teacher {(ch.get('teacher') or {}).get('experiment', '-')}")
    if ch.get("teacher"):
        add("teacher", f"{ch['teacher']['path']}  sha256 {ch['teacher']['sha256']}", ok.get(prefix + "teacher", ""))
    for part, sp in ch["splits"].items():
        counts = ", ".join(f"{k} {len(sp[k])}" for k in ("train", "val", "test") if k in sp)
        protocol = f"protocol {sp['protocol']}, " if sp.get("protocol") else ""
        add("splits", f"{sp['dataset']}: {sp['path']}  sha256 {sp['sha256']}  ({protocol}{counts} images)",
            ok.get(f"{prefix}splits {part}", ""))
        test = sp.get("test", [])
        if test and (part == "test_dataset" or "test_dataset" not in ch["splits"]):
            more = f" ... (+{len(test) - MAX_IDS}; --json lists all)" if len(test) > MAX_IDS else ""
            add("", "test ids: " + ", ".join(test[:MAX_IDS]) + more)
    for ds, rec in ch["datasets"].items():
        d = rec["data"]
        add("dataset", f"{ds}: {d['path']}  {d.get('files', 1)} files, tree sha256 "
                       f"{d.get('sha256_tree', d.get('sha256'))}", ok.get(f"{prefix}dataset {ds}", ""))
        for path, digest in rec["raw"].items():
            text = digest if isinstance(digest, str) else f"{digest['files']} files, tree sha256 {digest['sha256_tree']}"
            add("raw", f"{path}  sha256 {text}", ok.get(f"{prefix}raw {path}", ""))
    for s in ch.get("synthetic") or []:
        add("synthetic", f"{s['source']}: {s['path']}  {s['files']} files, tree sha256 {s['sha256_tree']}; "
                         f"seed {s.get('seed')}; params {_short(s.get('params'))}",
            ok.get(f"{prefix}synthetic {s['source']}", ""))
    code = ch.get("code") or {}
    dirty = {True: "yes (uncommitted changes)", False: "no", None: "unknown"}[code.get("dirty")]
    add("code", f"commit {code.get('commit') or 'unknown'}, dirty: {dirty}")
    pk = ch.get("packages") or {}
    add("packages", ", ".join(f"{k} {v}" for k, v in sorted(pk.items()) if v) + f"; python {ch.get('python')}")
    add("config", f"hash {ch.get('config_hash')}, seed {ch.get('seed')}")


def cmd_audit(args) -> int:
    result = audit_cell(args.table, args.row, args.column, check=not args.no_check)
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(format_audit(result), end="")
    bad = {k: v for k, v in result["checks"].items() if v not in ("ok", "")}
    return 1 if bad else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="provenance chain of one table cell",
                              description="Print where one number of a study table came from "
                                          "(reads TABLE.provenance.json next to the table).")
    p.add_argument("table", help="a table written by the workflow, e.g. results/demo/tables/study_heads.csv")
    p.add_argument("--row", required=True, help="row label as printed (or the experiment id)")
    p.add_argument("--column", required=True,
                   help="column as in the CSV header (e.g. nucleus/F1; 'nucleus F1' or a unique key also work)")
    p.add_argument("--json", action="store_true", help="print the cell's full record as JSON")
    p.add_argument("--no-check", action="store_true", help="do not re-hash the files of the chain")
    p.set_defaults(func=cmd_audit)

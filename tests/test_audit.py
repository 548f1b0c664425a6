"""Paper-labelled tables, the n/a rule, table provenance maps and `overlapseg audit` on a tiny
synthetic results tree (no training: files written by hand)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from overlapseg.cli import main
from overlapseg.provenance import table_provenance
from overlapseg.report.audit import audit_cell, format_audit
from overlapseg.report.study import write_study_table
from overlapseg.report.tables import (NOT_PREDICTED, NOT_PREDICTED_MARK, UNDEFINED, metrics_table,
                                      pixel_table, predicts, to_csv, to_latex, to_markdown)
from overlapseg.utils.io import sha256_file, write_json

PIXEL = {"accuracy": 0.9, "precision": 0.8, "recall": 0.7, "F1": 0.75, "IoU": 0.6}


def _category(ap: float, n_pred: int) -> dict:
    return {"AP": ap, "AP50": ap, "AP75": None, "boundary_AP": ap, "AJI": ap, "Dice": ap, "F1": ap,
            "n_gt": 5, "n_pred": n_pred}


def _metrics(cyto_ap: float, nuc_ap: float, nuc_pred: int, nuc_map: bool, prov: str) -> dict:
    pixel = {"cytoplasm": PIXEL} | ({"nucleus": PIXEL} if nuc_map else {})
    return {"cytoplasm": _category(cyto_ap, 4), "nucleus": _category(nuc_ap, nuc_pred),
            "mean": _category((cyto_ap + nuc_ap) / 2, 4 + nuc_pred), "pixel": pixel,
            "params": {"categories": ["cytoplasm", "nucleus"]},
            "provenance": {"id": prov, "git": {"commit": "c0ffee", "dirty": False}, "seed": 0,
                           "packages": {"torch": "2.x"}, "python": "3.11", "config_hash": "h"}}


# ----------------------------------------------------------------------------- n/a rule, labels
def test_not_predicted_class_reads_na_never_zero():
    no_head = _metrics(0.4, 0.0, 0, False, "a")  # no nucleus instance, no nucleus map
    found_none = _metrics(0.5, 0.0, 0, True, "b")  # predicts nuclei (maps) but found none: a real 0
    assert not predicts(no_head, "nucleus") and not predicts(no_head, "mean")
    assert predicts(found_none, "nucleus") and predicts(no_head, "cytoplasm")
    assert predicts({"nucleus": {"AP": 0.0}}, "nucleus")  # no n_pred recorded: nothing decided
    t = metrics_table([no_head, found_none], ["seunet_base", "seunet_2head"], "default",
                      labels=["SE-U-Net, base", "SE-U-Net | 2 heads"])
    j = t.column_names.index("nucleus/AP")
    assert t.cell(0, j) == NOT_PREDICTED_MARK and t.status[0][j] == NOT_PREDICTED
    assert t.cell(1, j) == "0.0" and t.status[1][j] == ""
    assert t.cell(0, t.column_names.index("mean/AP")) == NOT_PREDICTED_MARK
    assert "cytoplasm/AP75" not in t.column_names  # null in every row: dropped, and said so
    assert ("cytoplasm/AP75", UNDEFINED) in t.dropped
    lines = to_csv(t).splitlines()
    assert lines[0].startswith("label,cytoplasm/AP,") and lines[0].endswith(",experiment,provenance")
    assert lines[1].startswith('"SE-U-Net, base",40.0,') and lines[1].endswith(",seunet_base,a")
    assert "0.0" not in lines[1].split(",")[8:14] and lines[1].count(NOT_PREDICTED_MARK) == 12
    md = to_markdown(t)
    assert "| SE-U-Net, base | " in md and r"SE-U-Net \| 2 heads" in md and "`seunet_2head`" in md
    tex = to_latex(t)
    assert r"SE-U-Net, base & 40.0" in tex and r"\texttt{seunet\_base}" in tex and " --- " in tex
    px = pixel_table([no_head, found_none], ["a", "b"], classes=["cytoplasm", "nucleus"])
    k = px.column_names.index("nucleus/F1")
    assert px.cell(0, k) == NOT_PREDICTED_MARK and px.status[0][k] == NOT_PREDICTED and px.cell(1, k) == "75.0"


def test_rows_of_several_runs_read_mean_and_std():
    runs = [_metrics(0.4, 0.2, 3, True, "s0"), _metrics(0.5, 0.2, 3, True, "s1")]
    t = metrics_table([runs, _metrics(0.3, 0.1, 2, True, "c")], ["seeds", "single"], "default")
    assert t.cell(0, 0) == "45.0 ± 7.1" and t.cell(1, 0) == "30.0"
    assert t.provenance[0] == "s0+s1" and t.runs == [2, 1] and t.bold[0][0]
    aggregate = {**_metrics(0.45, 0.2, 3, True, ""), "seed_std": {"cytoplasm": {"AP": 0.05}},
                 "provenance": {"seeds": [{"id": "s0"}, {"id": "s1"}]}}
    t = metrics_table([aggregate], ["agg"], "default")
    assert t.cell(0, 0) == "45.0 ± 5.0" and t.provenance[0] == "s0+s1"


# ----------------------------------------------------------------------------- provenance + audit
@pytest.fixture()
def tree(tmp_path, monkeypatch):
    """results/ of a two-row study table written by hand, plus its provenance map."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/demo/raw").mkdir(parents=True)
    (tmp_path / "results/demo/raw/isbi_train.mat").write_bytes(b"raw images")
    (tmp_path / "results/demo/raw/isbi_train_GT.mat").write_bytes(b"raw masks")
    (tmp_path / "results/demo/data/images").mkdir(parents=True)
    (tmp_path / "results/demo/data/images/a.png").write_bytes(b"png a")
    (tmp_path / "results/demo/data/annotations.json").write_text("{}")
    (tmp_path / "results/demo/synth/ccce").mkdir(parents=True)
    (tmp_path / "results/demo/synth/ccce/annotations.json").write_text("{}")
    write_json("results/demo/splits.json", {"train": ["t1", "t2"], "val": ["v1"], "test": ["a", "b"],
                                            "protocol": "fractions (auto)"})
    rows, metrics = [], []
    for name, label, m in (("seunet_base", "SE-U-Net, base", _metrics(0.4, 0.0, 0, False, "id_base")),
                           ("seunet_2head", "SE-U-Net, 2 heads", _metrics(0.5, 0.0, 0, True, "id_2head"))):
        model_dir = tmp_path / f"results/demo/models/{name}"
        model_dir.mkdir(parents=True)
        # seunet_2head warm-started from seunet_base's encoder (model.pt's resolved init)
        init = {"init": {"kind": "from", "frozen_bn": False, "source": "seunet_base", "part": "encoder",
                         "file": "model.pt", "sha256": "5eed" * 16, "loaded": 12, "skipped": 0,
                         "source_init": {"kind": "scratch"}}} if name == "seunet_2head" else {}
        torch.save({"format": 1, "trainer": "seunet", "params": {"heads": name[7:], "lr": 0.001}, "seed": 0,
                    "iterations": 2, "inputs": {"sources": ["ccce"]}, **init,
                    "state_dict": {"w": torch.zeros(3, 2)}}, model_dir / "model.pt")
        write_json(model_dir / "timing.json", {"device": "cpu", "threads": 2, "iterations_run": 2,
                                               "seconds": 1.5})
        write_json(f"results/demo/predictions/{name}.json", [])
        sem = tmp_path / f"results/demo/semantic/{name}"
        sem.mkdir(parents=True)
        np.savez(sem / "a.npz", cytoplasm=np.zeros((4, 4), np.uint8))
        write_json(f"results/demo/metrics/{name}.json", m)
        metrics.append(f"results/demo/metrics/{name}.json")
        rows.append({"label": label, "experiment": name, "metrics": metrics[-1],
                     "predictions": f"results/demo/predictions/{name}.json",
                     "semantic": f"results/demo/semantic/{name}", "model": f"results/demo/models/{name}/model.pt",
                     "train_dataset": "demo", "test_dataset": "demo",
                     "splits": {"train": "results/demo/splits.json", "test": "results/demo/splits.json"},
                     "data": {"demo": "results/demo/data"},
                     "raw": {"demo": ["results/demo/raw/isbi_train.mat", "results/demo/raw/isbi_train_GT.mat"]},
                     "synthetic": [{"source": "ccce", "kind": "synthesis", "path": "results/demo/synth/ccce",
                                    "seed": 7, "params": {"n": 2}}],
                     "maps": None, "teacher": None})
    spec = {"kind": "instance", "preset": "default"}
    write_study_table(metrics, [r["experiment"] for r in rows], "results/demo/tables/study_heads",
                      title="Heads", labels=[r["label"] for r in rows], **spec)
    record = table_provenance("results/demo/tables/study_heads.csv", spec, rows, "demo", "study_heads", "Heads")
    write_json("results/demo/tables/study_heads.provenance.json", record)
    return tmp_path, record


def test_provenance_map_covers_every_cell_with_its_chain(tree):
    tmp, record = tree
    assert list(record["rows"]) == ["SE-U-Net, base", "SE-U-Net, 2 heads"]
    row = record["rows"]["SE-U-Net, base"]
    assert len(row["cells"]) == len(record["table"]["columns"]) == 18  # AP75 null in every row: dropped
    assert row["cells"]["nucleus/AP"] == {"value": NOT_PREDICTED_MARK, "metric": 0.0, "key": "nucleus.AP",
                                          "scale": 100, "status": NOT_PREDICTED}
    assert record["rows"]["SE-U-Net, 2 heads"]["cells"]["nucleus/AP"]["value"] == "0.0"
    chain = row["chain"]
    assert chain["model"]["sha256"] == sha256_file(tmp / "results/demo/models/seunet_base/model.pt")
    assert chain["model"]["params"] == {"heads": "base", "lr": 0.001} and chain["model"]["n_parameters"] == 6
    assert chain["device"] == "cpu" and chain["wall_time_s"] == 1.5
    assert chain["splits"]["train_dataset"]["test"] == ["a", "b"]
    assert set(chain["datasets"]["demo"]["raw"]) == {"results/demo/raw/isbi_train.mat",
                                                     "results/demo/raw/isbi_train_GT.mat"}
    assert chain["datasets"]["demo"]["data"]["files"] == 2
    assert chain["synthetic"][0]["seed"] == 7 and chain["synthetic"][0]["files"] == 1
    assert chain["code"] == {"commit": "c0ffee", "dirty": False} and chain["provenance_id"] == "id_base"


def test_stale_table_is_refused(tree):
    tmp, record = tree
    csv = tmp / "results/demo/tables/study_heads.csv"
    csv.write_text(csv.read_text().replace("40.0", "41.0", 1))
    rows = [{"label": r["label"], "experiment": r["experiment"], "metrics": r["chain"]["metrics"]["path"]}
            for r in record["rows"].values()]
    with pytest.raises(ValueError, match="study_heads.csv: does not match the table rebuilt"):
        table_provenance(csv, {"kind": "instance"}, rows, "demo")


def test_audit_one_cell(tree):
    tmp, _ = tree
    a = audit_cell("results/demo/tables/study_heads.csv", "SE-U-Net, base", "nucleus AP")
    assert a["column"] == "nucleus/AP" and a["cell"]["value"] == NOT_PREDICTED_MARK
    assert set(a["checks"].values()) == {"ok"}
    text = format_audit(a)
    assert f"shown as {NOT_PREDICTED_MARK}: not predicted" in text
    assert sha256_file(tmp / "results/demo/models/seunet_base/model.pt") in text
    assert "device cpu, 2 threads" in text and "test ids: a, b" in text and "seed 7" in text
    assert "(protocol fractions (auto), train 2, val 1, test 2 images)" in text  # issue 26
    assert "\ninit         scratch\n" in text  # no init record: random weights
    assert audit_cell("results/demo/tables/study_heads.csv", "seunet_2head", "nucleus/AP")["cell"]["value"] == "0.0"
    with pytest.raises(ValueError, match="no row 'nope'; rows: 'SE-U-Net, base' \\(seunet_base\\)"):
        audit_cell("results/demo/tables/study_heads.csv", "nope", "AP")
    with pytest.raises(ValueError, match="ambiguous column 'AP'"):  # cytoplasm, nucleus and mean have AP
        audit_cell("results/demo/tables/study_heads.csv", "seunet_base", "AP")


def test_audit_cli_prints_the_chain_and_flags_changed_files(tree, capsys):
    tmp, _ = tree
    assert main(["audit", "results/demo/tables/study_heads.csv", "--row", "SE-U-Net, 2 heads",
                 "--column", "cytoplasm/AP"]) == 0
    out = capsys.readouterr().out
    assert "row 'SE-U-Net, 2 heads' x column 'cytoplasm/AP' = 50.0  [ok]" in out
    assert "metrics[cytoplasm.AP] = 0.5" in out and "results/demo/models/seunet_2head/model.pt  sha256" in out
    assert ("\ninit         warm start from experiment seunet_base (part encoder): model.pt  sha256 "
            + "5eed" * 16 + ", 12 tensors loaded, 0 skipped; source started from scratch\n") in out
    assert main(["audit", "results/demo/tables/study_heads.csv", "--row", "seunet_2head", "--column",
                 "cytoplasm/AP", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chain"]["model"]["trainer"] == "seunet"
    (tmp / "results/demo/models/seunet_2head/model.pt").write_bytes(b"retrained")
    assert main(["audit", "results/demo/tables/study_heads.csv", "--row", "seunet_2head",
                 "--column", "cytoplasm/AP"]) == 1
    assert "[CHANGED since the table was built]" in capsys.readouterr().out
    assert main(["audit", "results/demo/tables/other.csv", "--row", "x", "--column", "AP"]) == 2
    assert "other.provenance.json: no provenance file" in capsys.readouterr().err


@pytest.mark.parametrize("edit, line_start", [
    ("results/demo/splits.json", "splits       demo: results/demo/splits.json"),
    ("results/demo/semantic/seunet_2head/a.npz", "semantic     results/demo/semantic/seunet_2head"),
    ("results/demo/data/images/a.png", "dataset      demo: results/demo/data"),
    ("results/demo/raw/isbi_train_GT.mat", "raw          results/demo/raw/isbi_train_GT.mat"),
    ("results/demo/synth/ccce/annotations.json", "synthetic    ccce: results/demo/synth/ccce"),
])
def test_audit_rehashes_splits_semantic_dataset_raw_and_sources(tree, capsys, edit, line_start):
    """Issue 31 item 7: these were listed from the record without re-hashing (rc 0 after an edit)."""
    tmp, _ = tree
    args = ["audit", "results/demo/tables/study_heads.csv", "--row", "seunet_2head", "--column", "cytoplasm/AP"]
    assert main(args) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(line_start)]
    assert line.endswith("[ok]")
    path = tmp / edit
    path.write_bytes(path.read_bytes() + b" ")
    assert main(args) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(line_start)]
    assert line.endswith("[CHANGED since the table was built]")
    path.unlink()  # a file removed from a recorded folder changes the folder's tree hash
    assert main(args) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(line_start)]
    assert line.endswith("[MISSING]" if edit.endswith((".json", ".mat")) and "/synth/" not in edit
                         else "[CHANGED since the table was built]")

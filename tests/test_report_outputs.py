"""Report tables and figures from evaluator outputs (tiny toy data in tmp_path)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from overlapseg.data.canonical import Instance, Sample, decode_segmentation, write_canonical_dataset
from overlapseg.evaluate import evaluate, write_metrics
from overlapseg.evaluate.toy import toy_case
from overlapseg.report.tables import metrics_table, pixel_table, to_latex, to_markdown, write_tables


def _metrics(ap_cyto, aji_cyto, fno, prov):
    cat = {"AP": ap_cyto, "AP50": 0.9, "AP75": None, "boundary_AP": 0.5, "AJI": aji_cyto,
           "Dice": 0.8, "F1": 0.7, "FNo": fno, "TPp": 0.9, "ISBI_Dice": 0.9, "FPp": 0.001}
    return {"cytoplasm": cat, "nucleus": dict(cat), "mean": dict(cat), "provenance": {"id": prov}}


def test_table_bold_best_precision_and_provenance():
    ms = [_metrics(0.41234, 0.7, 0.2, "aaa111"), _metrics(0.5, 0.65, 0.1, "bbb222")]
    t = metrics_table(ms, ["maskrcnn", "seunet"], "default")
    md = to_markdown(t)
    assert "| maskrcnn | 41.2 |" in md and "**50.0**" in md  # percent, 1 decimal, strict best bold
    assert "**70.0**" in md and "`aaa111`" in md and "`bbb222`" in md
    assert "AP75" not in md.splitlines()[0]  # undefined in every row: column dropped ...
    assert "Columns omitted (undefined in every row): cytoplasm/AP75" in md  # ... and said so
    isbi = to_markdown(metrics_table(ms, ["maskrcnn", "seunet"], "isbi"))
    assert "**10.00**" in isbi and "| 20.00 |" in isbi  # FNo: an error rate, lower is better
    tex = to_latex(t)
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf{50.0}" in tex
    assert r"\multicolumn{6}{c}{cytoplasm}" in tex and r"boundary\_AP" in tex
    with pytest.raises(ValueError, match="unknown table preset"):
        metrics_table(ms, ["a", "b"], "nope")
    with pytest.raises(ValueError, match="2 metrics files for 1"):
        metrics_table(ms, ["a"], "default")


def test_pixel_table_and_write_tables(tmp_path):
    ms = [_metrics(0.4, 0.7, 0.2, "a"), _metrics(0.5, 0.6, 0.1, "b")]
    ms[1]["pixel"] = {"overlap": {"accuracy": 0.99, "precision": 0.5, "recall": 0.25, "F1": 1 / 3, "IoU": 0.2}}
    t = pixel_table(ms, ["x", "y"])
    assert [c for c in t.columns] == [("overlap", k) for k in ("accuracy", "precision", "recall", "F1", "IoU")]
    assert t.values[0] == [None] * 5 and t.cell(1, 3) == "33.3" and t.cell(0, 3) == "\u2014"
    paths = []
    for k, m in enumerate(ms):
        paths.append(tmp_path / f"m{k}.json")
        write_metrics(paths[-1], {k2: v for k2, v in m.items() if k2 != "provenance"}, m["provenance"])
    written = write_tables(paths, ["x", "y"], tmp_path / "tables")
    assert sorted(p.name for p in written) == sorted(
        f"{s}.{e}" for s in ("metrics", "pixel") for e in ("csv", "md", "tex", "html"))
    csv_lines = (tmp_path / "tables" / "metrics.csv").read_text().splitlines()
    # row label first; experiment id and provenance id close the row
    assert csv_lines[0].startswith("label,cytoplasm/AP,") and csv_lines[0].endswith(",experiment,provenance")
    assert csv_lines[1].startswith("x,40.0,") and csv_lines[1].endswith(",x,a")


@pytest.fixture()
def toy_study(tmp_path):
    gt, preds = toy_case(seed=4, n_images=3, size=64)
    samples = []
    for img in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
        masks = [decode_segmentation(a["segmentation"], 64, 64) for a in anns]
        image = np.clip(220 - 50 * np.sum(masks, axis=0), 0, 255).astype(np.uint8)
        samples.append(Sample(img["name"], image, [
            Instance(m, "cytoplasm" if a["category_id"] == 1 else "nucleus") for m, a in zip(masks, anns)]))
    write_canonical_dataset(samples, tmp_path / "data")
    gt_path = tmp_path / "data" / "annotations.json"
    preds_paths, metrics_paths = [], []
    for k, seed_preds in enumerate((preds, toy_case(seed=5, n_images=3, size=64)[1])):
        preds_paths.append(tmp_path / f"pred{k}.json")
        preds_paths[-1].write_text(json.dumps(seed_preds))
        metrics_paths.append(tmp_path / f"metrics{k}.json")
        write_metrics(metrics_paths[-1], evaluate(gt_path, preds_paths[-1]), {"id": f"p{k}"})
    return tmp_path, gt_path, preds_paths, metrics_paths


def test_figures_written_and_reproducible(toy_study):
    from overlapseg.report.figures import write_figures

    tmp, gt_path, preds, metrics = toy_study
    first = write_figures(tmp / "data", gt_path, preds, metrics, ["a", "b"], tmp / "fig", "toy", n_images=2)
    assert sorted(p.name for p in first) == sorted(
        f"toy_{k}.{e}" for k in ("qualitative", "pr_curves", "ap_vs_overlap") for e in ("png", "pdf"))
    blobs = {p.name: p.read_bytes() for p in first}
    assert all(b[:4] in (b"\x89PNG", b"%PDF") for b in blobs.values())
    again = write_figures(tmp / "data", gt_path, preds, metrics, ["a", "b"], tmp / "fig", "toy", n_images=2)
    assert {p.name: p.read_bytes() for p in again} == blobs  # byte-identical reruns


def test_report_cli(toy_study):
    import argparse

    from overlapseg.report.cli import register

    tmp, gt_path, preds, metrics = toy_study
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["report", "table", "--metrics", *map(str, metrics), "--out-dir", str(tmp / "t"),
                              "--preset", "irnet"])
    args.func(args)
    md = (tmp / "t" / "metrics.md").read_text()
    assert "cytoplasm AJI" in md and "nucleus F1" in md and "| metrics0 |" in md
    assert not (tmp / "t" / "pixel.md").exists()

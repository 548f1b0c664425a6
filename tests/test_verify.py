"""`snakemake verify`: a from-scratch rerun of a configured subset matches the main run bit for
bit on CPU, and a tampered main-run metrics file is reported (workflow/rules/verify.smk,
overlapseg.verify)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from overlapseg.verify import compare_runs, compare_table_cells, finish, metric_differences

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_study.yaml"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_metric_and_cell_comparison_with_a_tolerance(tmp_path):
    a = {"cytoplasm": {"AP": 0.5, "n": 3, "bins": [0.1, None]}, "provenance": {"id": "x"}}
    b = {"cytoplasm": {"AP": 0.5004, "n": 3, "bins": [0.1, None]}, "provenance": {"id": "y"}}
    assert metric_differences(a, b, 1e-3) == []
    assert metric_differences(a, b, 0.0) == ["cytoplasm.AP: 0.5 vs 0.5004"]
    assert metric_differences(a, {**b, "pixel": {}}, 1e-3) == ["pixel: only in rerun"]
    (tmp_path / "m.csv").write_text("label,c/AP,experiment,provenance\nA,50.00,e,x\nB,1.00,f,y\n")
    (tmp_path / "r.csv").write_text("label,experiment,provenance\nA,e,x\n")
    assert compare_table_cells(tmp_path / "m.csv", tmp_path / "r.csv", ["e"]) == [
        "row 'e' column 'c/AP': '50.00' vs 'n/a'"]
    # a column dropped by one table (no value in any of its rows) matches a marker cell only
    (tmp_path / "m.csv").write_text("label,c/AP,n/AP,experiment,provenance\nA,50.0,\u2014,e,x\n")
    (tmp_path / "r.csv").write_text("label,c/AP,experiment,provenance\nA,50.0,e,x\n")
    assert compare_table_cells(tmp_path / "m.csv", tmp_path / "r.csv", ["e"]) == []
    (tmp_path / "r.csv").write_text("label,c/AP,u/AP,experiment,provenance\nA,50.0,3.0,e,x\n")
    assert compare_table_cells(tmp_path / "m.csv", tmp_path / "r.csv", ["e"]) == [
        "row 'e' column 'u/AP': 'n/a' vs '3.0'"]


@pytest.mark.slow
def test_verify_passes_on_cpu_and_reports_a_tampered_metrics_file(tmp_path):
    config = yaml.safe_load(TINY.read_text())  # one experiment, one table: the smallest verify
    del config["experiments"]["seunet_2head"], config["report"]["tables"]["heads"]
    cfg = tmp_path / "verify.yaml"
    cfg.write_text(yaml.safe_dump(config))
    work = tmp_path / "study"

    proc = snakemake(work, "--cores", "2", "verify", "--configfile", str(cfg))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((work / "results/verify/report.json").read_text())
    assert report["ok"] and report["experiments"] == ["seunet_base"] and report["mismatches"] == []
    compared = {e["path"]: e["status"] for e in report["files"]}
    assert compared == {p: "identical" for p in [
        "results/demo/models/seunet_base/model.pt", "results/demo/predictions/seunet_base.json",
        "results/demo/metrics/seunet_base.json", "results/demo/tables/study_base.csv",
        "results/demo/tables/study_base.md", "results/demo/tables/study_base.tex"]}
    assert [t["path"] for t in report["table_rows"]] == ["results/demo/tables/metrics.csv",
                                                         "results/demo/tables/pixel.csv"]
    assert (work / "results/verify/run/results/demo/models/seunet_base/model.pt").is_file()

    # A tampered main-run file is reported (the comparison and message of the rule, on the two
    # trees the run left; a second rule run would only repeat the from-scratch rerun).
    metrics_file = work / "results/demo/metrics/seunet_base.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["cytoplasm"]["AP"] = 0.999
    metrics_file.write_text(json.dumps(metrics))
    files = {kind: sorted({e["path"] for e in report["files"] if e["kind"] == kind})
             for kind in ("models", "predictions", "metrics", "tables")}
    files["table_cells"] = [t["path"] for t in report["table_rows"]]
    again = compare_runs(work, work / "results/verify/run", files, ["seunet_base"])
    ok, message = finish(again, work / "results/verify", work / "results/verify/report2.json")
    assert not ok and "1 difference(s) between the main run and the rerun of seunet_base" in message
    assert "results/demo/metrics/seunet_base.json: sha256" in message and "cytoplasm.AP: 0.999 vs" in message
    assert json.loads((work / "results/verify/mismatch.json").read_text())["ok"] is False
    assert not (work / "results/verify/report2.json").exists()

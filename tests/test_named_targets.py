"""One target rule per experiment and per study table (workflow/rules/targets.smk): listed,
scheduling only their own chain, and names that clash with workflow rules refused at load."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny_study.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    stats = dry_run_output.split("Job stats:", 1)[1]
    counts = {}
    for line in stats.splitlines()[3:]:
        m = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def test_target_rules_list_experiments_and_tables(tmp_path):
    out = snakemake(tmp_path, "--list-target-rules", "--configfile", str(TINY)).stdout
    listed = {line.split(" ", 1)[0] for line in out.splitlines()}
    assert {"seunet_base", "seunet_2head", "table_heads", "table_base", "verify", "all"} <= listed
    assert "seunet_2head (experiment 'SE-U-Net, 2 heads': seunet trained on demo, metrics on demo)" in out
    assert "provenance" not in listed  # a wildcard rule, reached through the table targets


def test_one_experiment_target_schedules_only_its_chain(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "2", "seunet_base", "--configfile", str(TINY)).stdout
    # split_annotations: test and val (the score thresholds are chosen on the val split)
    assert job_counts(out) == {"demo_data": 1, "ingest": 1, "splits": 1, "split_annotations": 2, "train": 1,
                               "predict": 1, "evaluate": 1, "seunet_base": 1, "total": 9}
    assert "results/demo/models/seunet_base/model.pt" in out and "seunet_2head" not in out


def test_one_table_target_builds_the_table_and_its_provenance(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "2", "table_heads", "--configfile", str(TINY)).stdout
    counts = job_counts(out)
    assert counts["train"] == 2 and counts["study_table"] == 1 and counts["provenance"] == 1
    assert counts["table_heads"] == 1 and "report_table" not in counts and "table_base" not in counts
    assert "results/demo/tables/study_heads.provenance.json" in out


def _rename(config: dict, old: str, new: str) -> None:
    config["experiments"][new] = config["experiments"].pop(old)
    for spec in config["report"]["tables"].values():
        spec["experiments"] = [new if e == old else e for e in spec["experiments"]]


@pytest.mark.parametrize("edit, message", [
    (lambda c: _rename(c, "seunet_2head", "train"),
     "experiment name 'train' clashes with the workflow rule 'train'"),
    (lambda c: c["experiments"]["seunet_2head"].update(label="SE-U-Net, cytoplasm head"),
     "report table 'heads' has several rows labelled ['SE-U-Net, cytoplasm head']"),
])
def test_clashing_names_fail_at_config_load(tmp_path, edit, message):
    config = yaml.safe_load(TINY.read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_warm_start_is_a_dag_edge_recorded_in_the_model_and_the_audit(tmp_path):
    """issue 26: `init: {from: A}` makes A's model an input of B's training job; B's model.pt
    records the source and its sha256, and the table audit prints the init line."""
    import subprocess

    from overlapseg.train.base import read_model_file
    from overlapseg.utils.io import sha256_file

    config = yaml.safe_load(TINY.read_text())
    base = config["experiments"]["seunet_2head"]
    config["experiments"]["seunet_warm"] = {**base, "label": "SE-U-Net, 2 heads, warm start",
                                            "params": {**base["params"], "init": {"from": "seunet_2head"}}}
    config["report"]["tables"] = {"warm": {"title": "Warm start", "kind": "pixel", "classes": ["cytoplasm"],
                                           "experiments": ["seunet_warm"]}}
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(config))
    dry = snakemake(tmp_path, "-n", "--cores", "1", "seunet_warm", "--configfile", str(path)).stdout
    source = "results/demo/models/seunet_2head/model.pt"
    warm_train = [block for block in dry.split("rule train:")[1:] if "experiment=seunet_warm" in block]
    assert warm_train and source in warm_train[0].split("output:")[0]
    snakemake(tmp_path, "--cores", "1", "table_warm", "--configfile", str(path))
    record = read_model_file(tmp_path / "results/demo/models/seunet_warm/model.pt")["init"]
    assert record["kind"] == "from" and record["sha256"] == sha256_file(tmp_path / source)
    audit = subprocess.run([sys.executable, "-m", "overlapseg.cli", "audit", "results/demo/tables/study_warm.csv",
                            "--row", "SE-U-Net, 2 heads, warm start", "--column", "cytoplasm/F1"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    init_line = [ln for ln in audit.stdout.splitlines() if ln.startswith("init")]
    assert init_line and "seunet_2head" in init_line[0], audit.stdout

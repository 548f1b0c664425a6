"""Rule segment / target segment_<name>: a configured experiment's model applied to a folder of
new images inside the workflow, with the model's sha256 recorded next to the outputs."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from skimage.io import imsave

from overlapseg.utils.io import read_json, sha256_file

ROOT = Path(__file__).resolve().parents[1]
STUDY = {
    "seed": 0, "device": "cpu",
    "datasets": {"demo": {"format": "isbi2014", "raw": "results/demo/raw",
                          "demo": {"n_images": 5, "size": 64, "min_cells": 2, "max_cells": 3,
                                   "overlap": [0.05, 0.4], "seed": 0},
                          "splits": {"val": 0.0, "test": 0.4}}},
    "experiments": {"seunet_2head": {
        "model": "seunet", "train": {"dataset": "demo"}, "test": ["demo"], "threads": 1,
        "params": {"heads": "2-head", "base_channels": 4, "depth": 2, "crop": 64, "batch_size": 2,
                   "iterations": 2, "lr": 0.001, "checkpoint_every": 2, "tile": 64, "stride": 32}}},
    "segment": {"lab": {"model": "seunet_2head", "images": "new_images", "save": ["coco", "labels", "csv"]}},
}


def snakemake(workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--cores", "1", *args, "--configfile", str(workdir / "study.yaml")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_segment_target_runs_the_configured_model_on_a_folder(tmp_path):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    images = tmp_path / "new_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        imsave(images / f"slide_{i}.png", (rng.random((64, 64)) * 255).astype(np.uint8), check_contrast=False)
    dry = snakemake(tmp_path, "-n", "segment_lab").stdout
    assert "rule train:" in dry and "rule segment:" in dry and "rule evaluate:" not in dry
    snakemake(tmp_path, "segment_lab")
    out = tmp_path / "results" / "segment" / "lab"
    summary = read_json(out / "segment_summary.json")
    model = tmp_path / "results" / "demo" / "models" / "seunet_2head" / "model.pt"
    assert sha256_file(model) in str(summary)
    assert not summary["failed"]
    for i in range(2):
        assert (out / f"slide_{i}.coco.json").is_file() and (out / f"slide_{i}.csv").is_file()
        assert not (out / f"slide_{i}.overlay.png").exists()  # not asked for in `save`


def test_segment_names_an_unknown_experiment_at_config_load(tmp_path):
    bad = {**STUDY, "segment": {"lab": {"model": "nope", "images": "x"}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "segment.lab.model: unknown experiment 'nope'" in proc.stdout + proc.stderr

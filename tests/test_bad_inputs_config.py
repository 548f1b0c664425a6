"""Config checks of issue 11 (items 4, 5 adapter options, 6, 7): the config fails at load,
before any job runs, with one line naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from overlapseg.study.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
DATASET = """
datasets:
  demo:
    format: isbi2014
    raw: results/demo/raw
    demo: {n_images: 6, size: 96, overlap: [0.05, 0.4]}
    splits: {val: 0.2, test: 0.3}
experiments:
  seg:
    model: seunet
    train: {dataset: demo}
    test: [demo]
maps: {overlap_sigma: 8.0}
"""


def config(**edits) -> dict:
    """A small valid config (YAML, so ``.nan`` is read as YAML reads it) with ``edits``
    applied: {"datasets.demo.splits.val": 0.6, ...}."""
    cfg = yaml.safe_load(DATASET)
    for path, value in edits.items():
        *parents, last = path.split("__")
        node = cfg
        for key in parents:
            node = node[key]
        node[last] = yaml.safe_load(value) if isinstance(value, str) else value
    return cfg


def test_valid_config_passes_and_gets_defaults():
    cfg = validate_config(config(), SCHEMA)
    assert cfg["datasets"]["demo"]["options"] == {} and cfg["maps"]["background"] == 0.1


@pytest.mark.parametrize("edit, message", [
    ({"datasets__demo__demo__overlap": "[.nan, 0.4]"}, "config: datasets.demo.demo.overlap[0]: must "
                                                       "be a finite number"),
    ({"maps__overlap_sigma": ".nan"}, "config: maps.overlap_sigma: must be a finite number"),
    ({"experiments__seg__params": "{lr: .inf}"}, "config: experiments.seg.params.lr: must be a "
                                                 "finite number"),
])
def test_non_finite_numbers_rejected(edit, message):  # item 4
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        validate_config(config(**edit), SCHEMA)


def test_misspelt_adapter_option_names_dataset_key_and_known_keys():  # item 5
    with pytest.raises(ValueError) as err:
        validate_config(config(datasets__demo__options={"skip_emtpy": True}), SCHEMA)
    assert str(err.value) == ("config: datasets.demo.options: unknown option(s) 'skip_emtpy' for "
                              "format 'isbi2014' (known: subset, skip_empty, skip_duplicates, "
                              "layout); did you mean 'skip_empty'?")


@pytest.mark.parametrize("splits, message", [
    ({"val": 0.6, "test": 0.6}, r"config: datasets\.demo\.splits: val \+ test = 0\.6 \+ 0\.6 must be "
                                r"below 1"),
    ({"val": 0.0, "test": 1.0}, r"config: datasets\.demo\.splits\.test: 1\.0 leaves no training "
                                r"images \(for a dataset only evaluated on, set preset: test-only\)"),
    ({"val": 1.0, "preset": "subsets"}, r"config: datasets\.demo\.splits\.val: 1\.0 leaves no "
                                        r"training images"),
])
def test_split_fractions_checked_at_load(splits, message):  # item 6
    with pytest.raises(ValueError, match=message):
        validate_config(config(datasets__demo__splits=splits), SCHEMA)


def test_test_only_preset_allows_test_fraction_one():
    validate_config(config(datasets__demo__splits={"test": 1.0, "preset": "test-only"}), SCHEMA)


def test_schema_error_is_one_short_line_with_the_key_path():  # item 7
    with pytest.raises(ValueError) as err:
        validate_config(config(datasets__demo__splits={"val": "x"}), SCHEMA)
    assert str(err.value) == "config: datasets.demo.splits.val: 'x' is not of type 'number'"
    assert err.value.__suppress_context__  # no chained jsonschema dump either
    with pytest.raises(ValueError, match=r"^config: datasets\.demo: Additional properties are not "
                                         r"allowed \('optoins' was unexpected\)$"):
        validate_config(config(datasets__demo__optoins={}), SCHEMA)


def test_snakemake_dry_run_shows_the_line_not_the_schema(tmp_path):
    """The Snakefile validates through validate_config: the dry run fails before any job
    with the one line (items 6 and 7 end to end)."""
    cfg = yaml.safe_load(TINY.read_text())
    for splits, line in [({"val": "x", "test": 0.3}, "config: datasets.demo.splits.val: 'x' is not of "
                                                     "type 'number'"),
                         ({"val": 0.6, "test": 0.6}, "config: datasets.demo.splits: val + test = "
                                                     "0.6 + 0.6 must be below 1")]:
        cfg["datasets"]["demo"]["splits"] = splits
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                               "-d", str(tmp_path), "-n", "--cores", "1", "--configfile", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and line in out, out[-2000:]
        assert "Failed validating" not in out and "schema[" not in out
        assert len(out.splitlines()) < 25, out
        assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("edit, line", [
    # issue 31 item 5: every name that must refer to something is checked at config load
    (dict(experiments__seg__train={"dataset": "demo2"}),
     "config: experiment 'seg': train.dataset 'demo2' is not a dataset of the config (known: demo)"),
    (dict(experiments__seg__test=["demo", "isbi"]),
     "config: experiment 'seg': test dataset 'isbi' is not a dataset of the config (known: demo)"),
    (dict(report={"figure_experiments": ["seg", "segg"]}),
     "config: report.figure_experiments: unknown experiment 'segg'"),
    (dict(report={"tables": {"t": {"experiments": ["seg", "sge"]}}}),
     "config: report table 't' names unknown experiments ['sge']"),
    (dict(verify={"experiments": ["nope"]}), "config: verify.experiments names unknown experiments ['nope'] "
                                             "(experiments of the config; a seed run is verified through its experiment)"),
    (dict(segment={"lab": {"model": "nope", "images": "x"}}), "config: segment.lab.model: unknown experiment 'nope'"),
])
def test_names_that_refer_to_nothing_fail_at_load_naming_the_key(edit, line):
    with pytest.raises(ValueError) as err:
        validate_config(config(**edit), SCHEMA)
    assert str(err.value) == line


def test_a_failing_job_prints_its_one_line_error_on_the_console(tmp_path):
    """issue 25: a bad split preset used to show `Error in rule splits: message: None` with the
    reason only inside a traceback in logs/; the job's one line is on the console now."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"]["demo"]["splits"] = {"preset": "isbi2014-official"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                           "-d", str(tmp_path), "--cores", "1", "results/demo/splits.json",
                           "--configfile", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("error in splits dataset=demo: ")]
    assert len(lines) == 1, out[-3000:]
    assert "needs the raw test set" in lines[0] and "(traceback: logs/demo/splits.log)" in lines[0]
    assert "Traceback" not in out  # the traceback is in the log only
    assert "Traceback" in (tmp_path / "logs" / "demo" / "splits.log").read_text()
    assert not (tmp_path / "results" / "demo" / "splits.json").exists()

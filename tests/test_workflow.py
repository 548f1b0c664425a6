"""The Snakemake DAG: dry run of the default study, config validation, bitwise determinism."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_dry_run_of_default_study(tmp_path):
    out = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(ROOT / "config.yaml")).stdout
    for rule in ("demo_data", "ingest", "splits", "train", "predict", "evaluate", "report_table",
                 "report_figures"):
        assert rule in out, rule


def test_single_experiment_target(tmp_path):
    # targets before --configfile, which takes several values
    out = snakemake(tmp_path, "results/demo/metrics/maskrcnn.json", "-n", "--cores", "2",
                    "--configfile", str(ROOT / "config.yaml")).stdout
    assert "evaluate" in out and "report_table" not in out


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(experimentz={}), "experimentz"),
    (lambda c: c["datasets"]["demo"].pop("format"), "format"),
    (lambda c: c["experiments"]["maskrcnn"].update(test=["nowhere"]), "nowhere"),
    # issue 11 item 5: a misspelt model param fails at load, naming experiment and key
    (lambda c: c["experiments"]["maskrcnn"]["params"].update(iteratoins=3),
     "experiment 'maskrcnn': unknown maskrcnn params: ['iteratoins']"),
    (lambda c: c["experiments"]["maskrcnn"].update(inputs={"maps": "v4"}),
     "uses no overlap-probability maps"),
    (lambda c: c["experiments"]["maskrcnn"].update(inputs={"sources": ["cccee"]}),
     "unknown source 'cccee'"),
])
def test_bad_config_fails_before_any_job(tmp_path, edit, message):
    config = yaml.safe_load(TINY.read_text())
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_two_runs_from_scratch_are_byte_identical(tmp_path):
    targets = ["results/demo/tables/metrics.csv", "results/demo/tables/metrics.md"]
    runs = []
    for name in ("run1", "run2"):
        workdir = tmp_path / name
        snakemake(workdir, *targets, "--cores", "2", "--configfile", str(TINY))
        runs.append(workdir)
    for rel in ["results/demo/metrics/maskrcnn.json", "results/demo/metrics/seunet_ovl.json",
                *targets, "results/demo/splits.json", "results/demo/predictions/maskrcnn.json",
                "results/demo/predictions/seunet_ovl.json", "results/demo/synth/ccce/annotations.json",
                "results/demo/models/seunet_ovl/model.pt", "results/demo/models/maskrcnn/model.pt"]:
        a, b = (runs[0] / rel).read_bytes(), (runs[1] / rel).read_bytes()
        assert a == b, rel
    metrics = (runs[0] / "results/demo/metrics/maskrcnn.json").read_text()
    assert '"provenance"' in metrics and '"config_hash"' in metrics
    shutil.rmtree(tmp_path)


def test_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint", "--snakefile", str(ROOT / "Snakefile")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_study_config_alone_builds_every_table_and_skips_missing_optional_data(tmp_path):
    """config/study.yaml replaces config.yaml (no demo rows leak in); without Dataset.zip the
    optional EDF dataset is skipped with a message and every named table is still built."""
    (tmp_path / "resources" / "raw" / "isbi2014").mkdir(parents=True)
    study = yaml.safe_load((ROOT / "config" / "study.yaml").read_text())
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(ROOT / "config" / "study.yaml"),
                     str(ROOT / "config" / "study-cpu.yaml"))
    out = proc.stdout + proc.stderr
    assert "optional dataset 'isbi2014_edf' skipped" in out
    assert "results/demo/" not in out and "isbi2014_edf/" not in out
    catalogue = yaml.safe_load((ROOT / study["catalogue"]).read_text())
    for table in catalogue["tables"]:
        assert f"results/isbi2014/tables/study_{table}.md" in out, table
    # the demo and the study share one catalogue: same experiments, same tables
    demo = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert demo["catalogue"] == study["catalogue"]
    assert "tables" not in demo["report"] and "tables" not in study.get("report", {})


GAN_STUDY = """
seed: 0
device: cpu
datasets:
  demo:
    format: isbi2014
    raw: results/demo/raw
    demo: {n_images: 6, size: 96, min_cells: 2, max_cells: 3, overlap: [0.05, 0.4], seed: 0}
    splits: {val: 0.0, test: 0.34}
synth:
  copypaste: {n: 3, n_cells: [1, 2], overlap: [0.0, 0.3], max_source_overlap: 0.6}
gan:
  cp_p2p:
    model: pix2pix
    dataset: demo
    n: 2
    threads: 1
    params: {condition: composite, crop_size: 32, ngf: 4, ndf: 4, iterations: 2, checkpoint_every: 2,
             tile: 32, stride: 16}
  c2f:
    model: coarse_to_fine
    dataset: demo
    n: 2
    threads: 1
    params: {category: nucleus, crop_size: 32, ngf: 4, ndf: 4, n_layers_d: 1, iterations: 2,
             checkpoint_every: 2, tile: 32, stride: 16, pool_size: 1}
experiments:
  seunet_gan:
    model: seunet
    train: {dataset: demo}
    inputs: {sources: [original, cp_p2p, c2f], mix: [2, 1, 1]}
    test: [demo]
    params: {heads: 2-head, base_channels: 4, depth: 2, crop: 64, batch_size: 2, iterations: 2,
             checkpoint_every: 2, tile: 96, stride: 48}
"""


@pytest.mark.slow
def test_gan_generators_feed_training_through_the_workflow(tmp_path):
    """gan_train -> gan_synthesize (copy-paste layouts without synth.copypaste's own n) and the
    coarse-to-fine generator -> a mixed training source -> metrics, plus each GAN report."""
    from overlapseg.data.canonical import CanonicalDataset

    cfg = tmp_path / "gan.yaml"
    cfg.write_text(GAN_STUDY)
    work = tmp_path / "study"
    snakemake(work, "results/demo/metrics/seunet_gan.json", "results/demo/gan/cp_p2p/quality.json",
              "results/demo/gan/c2f/quality.json", "--cores", "2", "--configfile", str(cfg))
    for name in ("cp_p2p", "c2f"):
        synth = CanonicalDataset(work / "results/demo/synth" / name)
        assert len(synth.names) == 2
        assert (work / f"results/figures/demo_gan_{name}.png").is_file()
    assert (work / "results/figures/demo_c2f_stages.png").is_file()
    assert (work / "results/demo/metrics/seunet_gan.json").is_file()


def _jobs(dry_run: str) -> list[dict]:
    """Jobs of a dry run's listing: rule, input and output paths, wildcards."""
    jobs, job = [], None
    for line in dry_run.splitlines() + [""]:
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            job = {"rule": line.split()[1][:-1], "input": [], "output": [], "wildcards": ""}
            jobs.append(job)
        elif job and line.startswith("    input: "):
            job["input"] = line[len("    input: "):].split(", ")
        elif job and line.startswith("    output: "):
            job["output"] = line[len("    output: "):].split(", ")
        elif job and line.startswith("    wildcards: "):
            job["wildcards"] = line[len("    wildcards: "):]
    return jobs


def test_study_fetches_imagenet_weights_once_upstream_of_every_imagenet_model(tmp_path):
    """issue 26: the study's detectors start from ImageNet ResNet-50; one local `weights` job
    provides the file every such training job reads (and nothing else does)."""
    from overlapseg.study.config import load_study

    (tmp_path / "resources" / "raw" / "isbi2014").mkdir(parents=True)
    out = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", str(ROOT / "config" / "study.yaml")).stdout
    jobs = _jobs(out)
    weights = [j for j in jobs if j["rule"] == "weights"]
    assert [j["output"] for j in weights] == [["resources/weights/resnet50-0676ba61.pth"]]
    study = load_study([ROOT / "config" / "study.yaml"], ROOT)
    imagenet = {e for e, exp in study["experiments"].items() if exp["params"].get("init") == "imagenet"}
    assert {"maskrcnn", "irnet", "donet", "cc"} <= imagenet
    for job in (j for j in jobs if j["rule"] == "train"):
        experiment = job["wildcards"].split("experiment=")[1]
        base = experiment.split("_seed")[0]
        assert (weights[0]["output"][0] in job["input"]) == (base in imagenet), experiment


def test_weights_job_offline_fails_in_one_line_naming_the_file(tmp_path):
    import os

    config = yaml.safe_load(TINY.read_text())
    config["experiments"]["maskrcnn"]["params"]["init"] = "imagenet"
    path = tmp_path / "imagenet.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"),  # an empty hub cache
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}  # offline
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
           "resources/weights/resnet18-f37072fd.pth", "--configfile", str(path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error in weights")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "resources/weights/resnet18-f37072fd.pth: not found" in lines[0]
    assert "put resnet18-f37072fd.pth into resources/weights/" in lines[0]
    assert not (tmp_path / "resources" / "weights" / "resnet18-f37072fd.pth").exists()

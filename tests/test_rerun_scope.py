"""A config change reruns exactly the jobs that depend on it (issue 25).

The demo DAG is "run" with ``--touch`` (empty outputs, Snakemake's metadata recorded as after a
real run), then one value at a time is changed and the set of jobs ``snakemake -n`` schedules
is compared with the set this change must rerun, spelled out here.
"""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "config.yaml").read_text())
CATALOGUE = yaml.safe_load((ROOT / "config" / "catalogue.yaml").read_text())
TABLES = CATALOGUE["tables"]
JOB = re.compile(r"^(?:local)?rule (\w+):$")

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, config: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--cores", "1", *args, "--configfile", str(config)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def scheduled(output: str) -> tuple[set[str], list[str]]:
    """(jobs as 'rule' or 'rule[key=value,...]', their output paths) of a dry run's listing."""
    jobs, outputs, rule, wildcards = set(), [], None, ""
    for line in output.splitlines() + [""]:
        m = JOB.match(line)
        if m:
            rule, wildcards = m.group(1), ""
        elif rule and line.startswith("    output: "):
            outputs += line[len("    output: "):].split(", ")
        elif rule and line.startswith("    wildcards: "):
            wildcards = line[len("    wildcards: "):].replace(" ", "")
        elif rule and not line.startswith("    "):
            jobs.add(f"{rule}[{wildcards}]" if wildcards else rule)
            rule = None
    return jobs, outputs


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    """A demo work folder in the state of a finished run (every output present, metadata written)."""
    work = tmp_path_factory.mktemp("demo")
    config = work / "base.yaml"
    config.write_text(yaml.safe_dump(DEMO, sort_keys=False))
    _, outputs = scheduled(snakemake(work, config, "-n", "--forceall"))
    for out in outputs:
        path = work / out
        if path.suffix:  # files have extensions; directory() outputs (data, maps, synth...) none
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    snakemake(work, config, "--touch", "--forceall", "--quiet", "all")
    jobs, _ = scheduled(snakemake(work, config, "-n"))
    assert jobs == set(), f"a touched demo still schedules {sorted(jobs)}"
    return work


def experiment_jobs(experiments) -> set[str]:
    return {f"{rule}[dataset=demo,experiment={e}]" for e in experiments for rule in ("train", "predict", "evaluate")}


def table_jobs(experiments, pixel=True) -> set[str]:
    """The report jobs that read these experiments' metrics: their study tables, the metrics
    and pixel tables, the provenance maps of all of them, and the final `all`."""
    tables = [t for t, spec in TABLES.items() if set(spec["experiments"]) & set(experiments)]
    jobs = {"all", "report_table[dataset=demo]", "provenance[dataset=demo,table=metrics]",
            "provenance[dataset=demo,table=pixel]"}
    jobs |= {f"study_table[dataset=demo,table={t}]" for t in tables}
    jobs |= {f"provenance[dataset=demo,table=study_{t}]" for t in tables}
    if set(experiments) & set(DEMO["report"]["figure_experiments"]):
        jobs.add("report_figures[dataset=demo]")
    return jobs


def rerun(work: Path, edit) -> set[str]:
    config = copy.deepcopy(DEMO)
    edit(config)
    path = work / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs, _ = scheduled(snakemake(work, path, "-n"))
    return jobs


def users_of(source=None, pool=False, maps=None):
    out = []
    for name, exp in CATALOGUE["experiments"].items():
        spec = exp.get("inputs", {})
        if (source and source in spec.get("sources", [])) or (pool and spec.get("pool", "all") != "all") \
                or (maps and spec.get("maps") == maps):
            out.append(name)
    return out


def test_a_ccce_threshold_reruns_ccce_its_users_and_their_tables(finished_demo):
    jobs = rerun(finished_demo, lambda c: c["synth"]["ccce"].update(max_overlap_ratio=0.2))
    users = users_of(source="ccce") + users_of(pool=True)
    expected = {"ccce[dataset=demo]", "ccce_figure[dataset=demo]"} | experiment_jobs(users) | table_jobs(users)
    assert jobs == expected
    # issue 25: 189 jobs before the catalogue (every train/predict/evaluate job carried the
    # CCCE thresholds); what remains is what reads them
    assert len(jobs) < 60


def test_a_map_parameter_reruns_only_the_variants_that_read_it(finished_demo):
    jobs = rerun(finished_demo, lambda c: c["maps"].update(overlap_sigma=6.0))  # v2 and v3 only
    users = users_of(maps="v2") + users_of(maps="v3")
    maps = {f"overlap_maps[dataset=demo,source=original,variant={v}]" for v in ("v2", "v3")}
    assert jobs == maps | {"maps_figure[dataset=demo]"} | experiment_jobs(users) | table_jobs(users)


def test_a_generator_param_reruns_that_generator_and_its_users(finished_demo):
    jobs = rerun(finished_demo, lambda c: c["budgets"]["real_pix2pix"]["params"].update(iterations=140))
    users = users_of(source="r_p2p")
    gan = {f"{r}[dataset=demo,generator=r_p2p]" for r in ("gan_train", "gan_synthesize", "gan_report")}
    assert jobs == gan | experiment_jobs(users) | table_jobs(users)


def test_an_experiment_param_reruns_that_experiment_only(finished_demo):
    jobs = rerun(finished_demo, lambda c: c["experiments"].setdefault("seunet_3head", {}).update(
        params={"lr": 0.02}))
    assert jobs == experiment_jobs(["seunet_3head"]) | table_jobs(["seunet_3head"])


def test_an_evaluate_setting_reruns_every_evaluation_and_table(finished_demo):
    jobs = rerun(finished_demo, lambda c: c["evaluate"].update(boundary_dilation=0.03))
    experiments = [e for e in CATALOGUE["experiments"]]
    evaluate = {f"evaluate[dataset=demo,experiment={e}]" for e in experiments}
    assert jobs == evaluate | table_jobs(experiments)


def test_a_table_row_list_reruns_that_table_only(finished_demo):
    def drop_row(config):
        config["report"]["tables"] = {"cc_cac": {**TABLES["cc_cac"], "experiments": ["cc_ccce"]}}

    jobs = rerun(finished_demo, drop_row)
    assert jobs == {"study_table[dataset=demo,table=cc_cac]", "provenance[dataset=demo,table=study_cc_cac]",
                    "all"}

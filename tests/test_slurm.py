"""`snakemake --profile slurm` on a real SLURM cluster (.ci/start_slurm.sh starts a single-node one).

A reduced demo study (tests/data/slurm_study.yaml, copied over config.yaml in a copy of the
repository) runs through the slurm executor with the project's profile and only the documented
per-cluster settings (docs/slurm.md: the partition, and memory per CPU on nodes with less than the
profile's 4000 MB), while a local run of the same study runs in a second copy. The Mask R-CNN training job is `scancel`ed after its first checkpoint; the profile's
`retries` resubmits it and it resumes from the checkpoint. Asserts: every job went through sbatch
(job ids, SLURM states, kept SLURM logs), models, metrics and tables equal the local run's byte
for byte, the cancelled training resumed instead of restarting, CPUs per task and torch threads
follow the config's `threads`, and no GPU is requested for `device: cpu`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "tests" / "data" / "slurm_study.yaml"
TARGETS = ["results/demo/tables/metrics.csv", "results/demo/tables/study_instances.md"]
CANCELLED_EXPERIMENT = "maskrcnn"   # trained long enough (8 iterations, checkpoint every 2)
TIMEOUT = 1500                      # seconds for both runs together (a hang guard; ~4 min idle)
# the repository without environments, outputs and caches
IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "logs", ".snakemake", "out", "__pycache__",
                                ".pytest_cache", "*.egg-info", ".benchmarks")

pytestmark = pytest.mark.slow


def _sh(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (no sinfo/sbatch); .ci/start_slurm.sh installs and starts a single-node cluster"
    try:
        proc = _sh("sinfo", "-h", "-o", "%P %t", timeout=20)
    except subprocess.TimeoutExpired:
        return "the SLURM cluster is down (sinfo timed out); start it with .ci/start_slurm.sh"
    if proc.returncode != 0:
        return f"the SLURM cluster is down ({proc.stderr.strip()}); start it with .ci/start_slurm.sh"
    if not re.search(r"\b(idle|mix|alloc|comp)\b", proc.stdout):
        return f"no SLURM node is up:\n{proc.stdout}"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem:
        if os.environ.get("OVERLAPSEG_REQUIRE_SLURM") == "1":  # set by .ci/run once the cluster started
            pytest.fail(problem)
        pytest.skip(problem)


def _cluster_settings() -> dict[str, str]:
    """The documented per-cluster settings (docs/slurm.md) for this cluster, unless given."""
    env = dict(os.environ)
    if not env.get("OVERLAPSEG_SLURM_PARTITION"):
        names = _sh("sinfo", "-h", "-o", "%P").stdout.split()
        env["OVERLAPSEG_SLURM_PARTITION"] = next((p for p in names if p.endswith("*")), names[0]).rstrip("*")
    if not env.get("OVERLAPSEG_SLURM_MEM_MB_PER_CPU"):   # small nodes (the default asks 4000 per CPU)
        nodes = _sh("sinfo", "-h", "-p", env["OVERLAPSEG_SLURM_PARTITION"], "-o", "%c %m").stdout.split("\n")
        per_cpu = min(int(m.rstrip("+")) // int(c.rstrip("+")) for c, m in (n.split() for n in nodes if n.strip()))
        if per_cpu < 4000:
            env["OVERLAPSEG_SLURM_MEM_MB_PER_CPU"] = str(per_cpu)
    return env


def _repo_copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, symlinks=True, ignore=IGNORE)
    shutil.copyfile(STUDY, dest / "config.yaml")    # what a user edits: the study config
    return dest


def _snakemake(cwd: Path, log: Path, *args: str, env: dict) -> subprocess.Popen:
    """Snakemake in a copy, importing that copy's code (SLURM jobs inherit the environment)."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd / "src"), env.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "snakemake", *args, *TARGETS]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _queue(run_id: str, jobs: dict[str, dict]) -> None:
    """Record state, comment (rule and wildcards), CPUs and GRES of this run's SLURM jobs while
    squeue still lists them (finished jobs stay MinJobAge seconds)."""
    out = _sh("squeue", "-h", "--states=all", "--name", run_id, "-o", "%i|%T|%k|%C|%b").stdout
    for line in out.splitlines():
        jobid, state, comment, cpus, gres = line.split("|")
        jobs[jobid] = {"state": state, "comment": comment, "cpus": int(cpus), "gres": gres}


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


def test_study_through_slurm_equals_local_run(cluster, tmp_path):
    started = time.monotonic()
    local, remote = _repo_copy(tmp_path / "local"), _repo_copy(tmp_path / "cluster")
    local_log, remote_log = tmp_path / "local.log", tmp_path / "cluster.log"
    env = _cluster_settings()

    runs = {"cluster": _snakemake(remote, remote_log, "--profile", "slurm", env=env),
            "local": _snakemake(local, local_log, "--cores", "2", env=env)}
    checkpoint = remote / f"results/demo/models/{CANCELLED_EXPERIMENT}/checkpoints/last.pt"
    train_comment = f"rule_train_wildcards_demo_{CANCELLED_EXPERIMENT}"
    jobs: dict[str, dict] = {}      # SLURM job id -> state, comment, cpus, gres
    run_id, cancelled, polled = None, None, 0.0
    try:
        while any(p.poll() is None for p in runs.values()):
            if time.monotonic() - started > TIMEOUT:
                pytest.fail(f"runs took over {TIMEOUT} s:\n{_tail(remote_log)}")
            if run_id is None and (m := re.search(r"SLURM run ID: (\S+)", remote_log.read_text())):
                run_id = m.group(1)
            if run_id and cancelled is None and checkpoint.exists():
                _queue(run_id, jobs)
                running = [i for i, j in jobs.items() if j["comment"] == train_comment
                           and j["state"] == "RUNNING"]
                assert running, f"the training job is not running: {jobs}"
                assert _sh("scancel", running[0]).returncode == 0
                cancelled = running[0]
            if run_id and time.monotonic() - polled > 2:
                _queue(run_id, jobs)
                polled = time.monotonic()
            time.sleep(0.2)
        if run_id:
            _queue(run_id, jobs)
    finally:  # on failure: Snakemake cancels its SLURM jobs on SIGINT
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in runs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    for name, proc in runs.items():
        log = remote_log if name == "cluster" else local_log
        assert proc.returncode == 0, f"{name} run failed:\n{_tail(log)}"
    assert cancelled, "the training finished before its first checkpoint could be cancelled"
    text = remote_log.read_text()

    # every DAG job went through sbatch: one SLURM job per job, plus the retried training
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", text)
    n_jobs = int(re.search(r"^total\s+(\d+)", text, re.M).group(1))
    assert len(submitted) == n_jobs + 1, text[-3000:]
    assert "localrule" not in text, "a job ran in the Snakemake process instead of through SLURM"
    assert {sid for _, sid in submitted} == set(jobs), (submitted, jobs)
    assert jobs[cancelled]["state"] == "CANCELLED", jobs[cancelled]
    assert all(j["state"] == "COMPLETED" for sid, j in jobs.items() if sid != cancelled), jobs
    train_jobs = [sid for sid, j in jobs.items() if j["comment"] == train_comment]
    assert len(train_jobs) == 2 and cancelled in train_jobs, train_jobs    # cancelled, then retried
    logs = {p.stem for p in (remote / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert {sid for _, sid in submitted} <= logs, "SLURM logs of successful jobs must be kept"

    # models, metrics and tables equal the local run's byte for byte
    config = yaml.safe_load(STUDY.read_text())
    compared = [f"results/demo/models/{e}/model.pt" for e in config["experiments"]]
    compared += [f"results/demo/metrics/{e}.json" for e in config["experiments"]]
    compared += [str(p.relative_to(local)) for p in sorted((local / "results/demo/tables").iterdir())]
    compared += ["results/demo/splits.json"]
    assert len(compared) > 8
    for rel in compared:
        assert (remote / rel).read_bytes() == (local / rel).read_bytes(), rel

    # the retried training resumed from its checkpoint instead of starting over
    iterations = config["experiments"][CANCELLED_EXPERIMENT]["params"]["iterations"]
    timing = json.loads((remote / f"results/demo/models/{CANCELLED_EXPERIMENT}/timing.json").read_text())
    assert 0 < timing["iterations_run"] < iterations, timing

    # CPUs per task = the config's threads, and torch inside the job ran with them; no GPU asked
    for name, exp in config["experiments"].items():
        threads = exp["threads"]
        timing = json.loads((remote / f"results/demo/models/{name}/timing.json").read_text())
        assert timing["threads"] == threads, (name, timing)
        job = next(j for j in jobs.values() if j["comment"] == f"rule_train_wildcards_demo_{name}"
                   and j["state"] == "COMPLETED")
        assert job["cpus"] == threads and "gpu" not in job["gres"], (name, job)
    print(f"SLURM study: {len(submitted)} SLURM jobs, {time.monotonic() - started:.0f} s")

# SLURM resources of the GPU rules (train, predict), used in their `resources:` blocks; local
# runs ignore them. The per-cluster settings live in profiles/slurm/config.yaml, which exports
# them as OVERLAPSEG_SLURM_* variables (docs/slurm.md); every other job gets the profile's
# default-resources. CPUs per task are the job's threads (the slurm plugin's default), and
# train/predict hand `snakemake.threads` to torch, so SLURM, Snakemake and torch agree.
import os

# envs/overlapseg.yaml installs the project from here (with `--sdm conda`); see that file
os.environ.setdefault("OVERLAPSEG_ROOT", workflow.basedir)

TRAIN_RUNTIME = 720     # minutes; override with --set-resources train:runtime=<minutes>
PREDICT_RUNTIME = 120


def gpu_request(wildcards=None):
    """GPUs a train/predict job asks SLURM for: 0 for `device: cpu`, 1 for cuda and auto."""
    return 0 if config.get("device", "auto") == "cpu" else 1


def gpu_job_partition(wildcards=None):
    """The GPU partition for jobs that request a GPU, else the CPU partition; None (the key is
    dropped, so SLURM uses its default partition) when the profile sets neither."""
    gpu_partition = os.environ.get("OVERLAPSEG_SLURM_GPU_PARTITION")
    if gpu_request() and gpu_partition:
        return gpu_partition
    return os.environ.get("OVERLAPSEG_SLURM_PARTITION") or None

"""Provenance records: which data, code, config and seed produced a number."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from overlapseg.utils.io import dumps_json, sha256_file

PACKAGES = ("overlapseg", "torch", "torchvision", "numpy", "scipy", "scikit-image", "pycocotools",
            "opencv-python-headless", "pandas", "snakemake")


def git_commit(cwd: str | os.PathLike | None = None) -> dict:
    """HEAD commit of the repository holding the code, and whether the tree had local changes."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def config_hash(config: dict) -> str:
    return hashlib.sha256(dumps_json(config).encode()).hexdigest()[:16]


def input_checksums(paths) -> dict[str, str]:
    """sha256 of every input file (directories: of each file inside, sorted)."""
    out: dict[str, str] = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            out[str(f)] = sha256_file(f)
    return out


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict, inputs, seed: int, experiment: str | None = None) -> dict:
    """A record whose ``id`` changes whenever the config, the inputs or the code change.

    The id excludes the wall clock and host so that reruns give byte-identical metrics files.
    """
    record = {
        "experiment": experiment,
        "seed": seed,
        "config_hash": config_hash(config),
        "git": git_commit(),
        "inputs": input_checksums(inputs),
        "packages": package_versions(),
        "python": platform.python_version(),
    }
    record["id"] = hashlib.sha256(dumps_json(record).encode()).hexdigest()[:12]
    return record

"""Training plumbing shared by the model trainers: seeding, checkpoints, loss log."""
from __future__ import annotations

import csv
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from overlapseg.utils.io import atomic_path


def seed_everything(seed: int, device: str) -> None:
    """Seed every RNG and make CPU kernels deterministic (bitwise-reproducible runs)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """RNG for one iteration: depends only on (seed, iteration), so resuming is exact."""
    return np.random.default_rng([seed, iteration])


def save_checkpoint(path: Path, model, optimizer, scheduler, iteration: int, extra: dict | None = None) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else None,
             "iteration": iteration, "torch_rng": torch.get_rng_state(), **(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> int:
    """Restore a checkpoint; returns the iteration to continue from."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["iteration"])


class LossLog:
    """Append-only CSV of losses; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, fields: list[str], resume_from: int = 0):
        self.path = Path(path)
        self.fields = ["iteration", *fields]
        rows = []
        if resume_from and self.path.exists():
            with open(self.path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) < resume_from]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(
                {"iteration": iteration, **{k: f"{values[k]:.6g}" for k in self.fields[1:]}})


def check_finite(loss: torch.Tensor, where: str | os.PathLike, iteration: int, parts: dict) -> None:
    value = float(loss.detach())
    if not math.isfinite(value):
        detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
        raise FloatingPointError(f"{where}: non-finite training loss at iteration {iteration} "
                                 f"({detail}); lower the learning rate or check the data")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))

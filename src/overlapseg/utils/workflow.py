"""Helpers for the thin Snakemake scripts in ``workflow/scripts``."""
from __future__ import annotations

import logging
import sys


def log_to_file(snakemake) -> None:
    """Send logging and stderr (tqdm progress, warnings) of a script job to its rule's log file."""
    if not snakemake.log:
        logging.basicConfig(level=logging.INFO)
        return
    stream = open(snakemake.log[0], "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def as_list(value) -> list:
    """A Snakemake input entry as a list (one path, a list of paths, or nothing)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)

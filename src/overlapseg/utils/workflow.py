"""Helpers for the thin Snakemake scripts in ``workflow/scripts``."""
from __future__ import annotations

import logging
import sys


def log_to_file(snakemake) -> None:
    """Send logging and stderr (tqdm progress, warnings) of a script job to its rule's log file.

    A failing job still says why on the console: the exception's one line (the file and the
    problem, as the CLI prints it) goes to the console's stderr, the traceback to the log.
    """
    if not snakemake.log:
        logging.basicConfig(level=logging.INFO)
        return
    console = sys.stderr
    stream = open(snakemake.log[0], "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=stream, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = f"{snakemake.rule}" + "".join(f" {k}={v}" for k, v in snakemake.wildcards.items())

    def report(kind, exc, tb):
        import traceback

        from overlapseg.utils.cli import error_line

        traceback.print_exception(kind, exc, tb, file=stream)
        stream.flush()
        print(f"error in {job}: {error_line(exc)}  (traceback: {snakemake.log[0]})", file=console)

    sys.excepthook = report


def as_list(value) -> list:
    """A Snakemake input entry as a list (one path, a list of paths, or nothing)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)

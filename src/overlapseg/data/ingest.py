"""Raw annotations -> canonical dataset, through a format adapter chosen by name."""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from overlapseg.data.adapters import ADAPTERS, unknown_format, check_adapter_options
from overlapseg.data.canonical import DataError, write_canonical_dataset

log = logging.getLogger(__name__)


def get_adapter(fmt: str):
    if fmt not in ADAPTERS:
        raise unknown_format(fmt)
    return importlib.import_module(f"overlapseg.data.adapters.{ADAPTERS[fmt]}")


def ingest(fmt: str, raw: str | os.PathLike, out: str | os.PathLike, **options) -> Path:
    """Read ``raw`` with the adapter for ``fmt`` and write the canonical dataset to ``out``."""
    raw = Path(raw)
    if not raw.exists():
        raise DataError(raw, "raw data path does not exist")
    adapter = get_adapter(fmt)
    check_adapter_options(fmt, options, f"{raw}: adapter options")
    samples = adapter.read(raw, **options)
    info = {"format": fmt, "raw": str(raw), "options": options}
    path = write_canonical_dataset(samples, out, info=info)
    log.info("ingested %s (%s) -> %s", raw, fmt, path)
    return path

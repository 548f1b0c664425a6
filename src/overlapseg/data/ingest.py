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


def ingest(fmt: str, raw: str | os.PathLike, out: str | os.PathLike, scale: float = 1.0,
           **options) -> Path:
    """Read ``raw`` with the adapter for ``fmt`` and write the canonical dataset to ``out``.

    ``scale``: factor that resamples this dataset's images to the study's reference pixel size
    (1.0 native; recorded in ``info.scale``; models resample test images by it at inference).
    """
    raw = Path(raw)
    if not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
        raise ValueError(f"{raw}: scale must be a positive finite number, got {scale!r}")
    if not raw.exists():
        raise DataError(raw, "raw data path does not exist")
    adapter = get_adapter(fmt)
    check_adapter_options(fmt, options, f"{raw}: adapter options")
    samples = adapter.read(raw, **options)
    info = {"format": fmt, "raw": str(raw), "options": options, "scale": float(scale)}
    path = write_canonical_dataset(samples, out, info=info)
    log.info("ingested %s (%s) -> %s", raw, fmt, path)
    return path

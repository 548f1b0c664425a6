"""Raw annotations -> canonical dataset, through a format adapter chosen by name."""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from overlapseg.data.adapters import ADAPTERS, unknown_format, check_adapter_options
from overlapseg.data.canonical import DataError, Instance, Sample, write_canonical_dataset

log = logging.getLogger(__name__)


def _touch(a: Instance, b: Instance) -> bool:
    """Whether two instances share a pixel (compared inside their boxes' intersection)."""
    (ay, ax), (ah, aw) = a.offset, a.crop.shape
    (by, bx), (bh, bw) = b.offset, b.crop.shape
    y0, y1, x0, x1 = max(ay, by), min(ay + ah, by + bh), max(ax, bx), min(ax + aw, bx + bw)
    if y0 >= y1 or x0 >= x1:
        return False
    return bool((a.crop[y0 - ay:y1 - ay, x0 - ax:x1 - ax] & b.crop[y0 - by:y1 - by, x0 - bx:x1 - bx]).any())


def orphan_nuclei(sample: Sample) -> int:
    """Nuclei of ``sample`` that touch no cytoplasm instance (a nucleus outside every cell)."""
    cells = [i for i in sample.instances if i.category == "cytoplasm"]
    count = 0
    for nuc in sample.instances:
        if nuc.category != "nucleus":
            continue
        own = sample.instances[nuc.parent] if nuc.parent is not None else None
        if own is not None and _touch(nuc, own):
            continue
        count += not any(_touch(nuc, c) for c in cells)
    return count


def _report_orphans(samples, raw: Path):
    """Pass samples through; log one line if some nuclei lie outside every cell (they are
    kept, without a parent cell, and count as isolated in the overlap breakdown)."""
    found: dict[str, int] = {}
    for sample in samples:
        n = orphan_nuclei(sample)
        if n:
            found[sample.name] = n
        yield sample
    if found:
        first = sorted(found)[0]
        log.warning("%s: %d nucleus instance(s) in %d image(s) lie outside every cell (kept without "
                    "a parent cell), e.g. %d in image %r", raw, sum(found.values()), len(found),
                    found[first], first)


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
    # adapters of single-category formats say which categories their data annotates
    scope = getattr(adapter, "annotated_categories", None)
    path = write_canonical_dataset(_report_orphans(samples, raw), out, info=info,
                                   annotated=scope(**options) if scope is not None else None)
    log.info("ingested %s (%s) -> %s", raw, fmt, path)
    return path

"""The real extended-depth-of-field (EDF) images of the ISBI 2014 ``Dataset.zip``.

``EDF/EDF000.png`` ... are 1024 x 1024 real cytology images; ``EDF/EDFnnn_GT.png`` annotate
their nuclei only, so every sample carries nucleus instances and is declared test-only
(``subset = "test"``). In some GT files a nucleus is a filled region, in others it is a
drawn closed outline. :func:`nuclei_from_annotation` recovers filled instances from both
and counts the outlines that do not close (they cannot be filled and are reported rather
than silently dropped).

Options: ``outline_width`` (widest drawn outline in px, default 3: thinner foreground
components are outlines, thicker ones filled nuclei), ``min_area`` (smallest nucleus in
px, default 16), ``report`` (a list; one dict per image is appended, see
:class:`OutlineReport`), ``report_file`` (path; the same records written as JSON once
all images are read). Each image with unclosed outlines also logs a warning.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage as ndi

from overlapseg.data.canonical import DataError, Instance, Sample, read_image
from overlapseg.utils.io import write_json

log = logging.getLogger(__name__)

EIGHT = np.ones((3, 3), dtype=bool)
FOUR = ndi.generate_binary_structure(2, 1)
IMAGE_RE = re.compile(r"^EDF(\d+)\.png$", re.IGNORECASE)
GT_RE = re.compile(r"^EDF(\d+)_GT\.png$", re.IGNORECASE)


@dataclass
class OutlineReport:
    """How the nuclei of one GT file were recovered."""

    name: str
    gt_file: str
    filled_regions: int  # nuclei drawn as filled regions
    closed_outlines: int  # nuclei drawn as closed outlines, filled here
    unclosed_outlines: int  # outline pieces that enclose nothing: not recoverable
    instances: int


def foreground(gt: np.ndarray) -> np.ndarray:
    """Annotated pixels: everything that differs from the most frequent value (background),
    so both black-on-white and white-on-black drawings work, colour or grey."""
    if gt.ndim == 3:
        flat = gt.reshape(-1, gt.shape[2])
        values, counts = np.unique(flat, axis=0, return_counts=True)
        return np.any(gt != values[np.argmax(counts)], axis=2)
    values, counts = np.unique(gt, return_counts=True)
    return gt != values[np.argmax(counts)]


def nuclei_from_annotation(fg: np.ndarray, outline_width: int = 3, min_area: int = 16
                           ) -> tuple[list[np.ndarray], dict[str, int]]:
    """Filled nucleus masks from a foreground drawing of filled regions and/or outlines.

    Foreground is split into 8-connected components. A component thicker than
    ``outline_width`` (max distance to background above half of it) is a filled nucleus
    (its holes filled). A thin one is outline: each 4-connected region it encloses
    (outlines are 8-connected, so only 4-connected regions are separated by them) becomes
    one nucleus together with the outline pixels bordering it, which also splits touching
    outlines. A thin component enclosing no region of ``min_area`` px is an unclosed
    outline and only counted. Returns (masks, counts).
    """
    fg = np.asarray(fg, dtype=bool)
    labels, n = ndi.label(fg, structure=EIGHT)
    counts = {"filled_regions": 0, "closed_outlines": 0, "unclosed_outlines": 0}
    if n == 0:
        return [], counts
    thickness = ndi.maximum(ndi.distance_transform_edt(fg), labels, np.arange(1, n + 1))
    thin = np.asarray(thickness) <= (outline_width + 1) // 2
    holes = ndi.binary_fill_holes(fg) & ~fg
    hole_labels, n_holes = ndi.label(holes, structure=FOUR)
    # The component enclosing each hole: the label found on the hole's 8-neighbour ring.
    ring_owner = ndi.maximum(ndi.grey_dilation(labels, footprint=EIGHT), hole_labels,
                             np.arange(1, n_holes + 1)) if n_holes else []
    hole_area = np.bincount(hole_labels.ravel(), minlength=n_holes + 1)
    hole_slices = ndi.find_objects(hole_labels)
    comp_slices = ndi.find_objects(labels)
    masks: list[np.ndarray] = []
    enclosing = np.zeros(n + 1, dtype=int)  # closed regions found per component
    for h in range(1, n_holes + 1):
        owner = int(ring_owner[h - 1])
        if owner == 0 or not thin[owner - 1] or hole_area[h] < min_area:
            continue  # holes of filled regions are filled below; specks are ignored
        sl = _grow(hole_slices[h - 1], fg.shape)
        region = hole_labels[sl] == h
        ring = ndi.binary_dilation(region, structure=EIGHT) & (labels[sl] == owner)
        mask = np.zeros(fg.shape, dtype=bool)
        mask[sl] = region | ring
        masks.append(mask)
        enclosing[owner] += 1
    counts["closed_outlines"] = int(enclosing.sum())
    for c in range(1, n + 1):
        sl = comp_slices[c - 1]
        comp = labels[sl] == c
        if not thin[c - 1]:
            if comp.sum() >= min_area:
                mask = np.zeros(fg.shape, dtype=bool)
                mask[sl] = ndi.binary_fill_holes(comp)
                masks.append(mask)
                counts["filled_regions"] += 1
        elif enclosing[c] == 0:
            counts["unclosed_outlines"] += 1
    return masks, counts


def _grow(sl: tuple[slice, slice], shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A bounding box widened by one pixel (to hold the outline around a hole)."""
    return tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, shape))


def find_edf_folder(raw: Path) -> Path:
    """``raw/EDF`` (the Dataset.zip root or its parent), or ``raw`` itself if it holds the files."""
    for folder in (raw / "EDF", raw, *sorted(raw.glob("*/EDF"))):
        if folder.is_dir() and any(GT_RE.match(p.name) or IMAGE_RE.match(p.name)
                                   for p in folder.iterdir()):
            return folder
    raise DataError(raw, "no EDF images found (expected EDF/EDF000.png and EDF/EDF000_GT.png)")


def annotated_categories(**_options) -> tuple[str, ...]:
    """The EDF ground truth outlines nuclei only."""
    return ("nucleus",)


def read(raw: Path, outline_width: int = 3, min_area: int = 16, report: list | None = None,
         report_file: str | None = None) -> Iterator[Sample]:
    """Samples ``EDF000``... with nucleus instances, all in subset ``test``."""
    folder = find_edf_folder(Path(raw))
    images = {int(m.group(1)): p for p in folder.iterdir() if (m := IMAGE_RE.match(p.name))}
    gts = {int(m.group(1)): p for p in folder.iterdir() if (m := GT_RE.match(p.name))}
    for idx in sorted(set(images) ^ set(gts)):
        if idx in gts:
            raise DataError(folder / f"EDF{idx:03d}.png",
                            f"incomplete EDF layout: image missing for {gts[idx].name}")
        raise DataError(folder / f"EDF{idx:03d}_GT.png",
                        f"incomplete EDF layout: ground truth missing for {images[idx].name}")
    records = []
    for idx in sorted(images):
        image = read_image(images[idx])
        gt_path = gts[idx]
        gt = read_image(gt_path)
        if gt.shape[:2] != image.shape[:2]:
            raise DataError(gt_path, f"mask size {gt.shape[:2]} does not match image size "
                                     f"{image.shape[:2]} of {images[idx].name}")
        masks, counts = nuclei_from_annotation(foreground(gt), outline_width, min_area)
        name = images[idx].stem
        rec = OutlineReport(name=name, gt_file=f"{folder.name}/{gt_path.name}",
                            instances=len(masks), **counts)
        records.append(asdict(rec))
        if report is not None:
            report.append(asdict(rec))
        if rec.unclosed_outlines:
            log.warning("%s: %d nucleus outline(s) not closed, cannot be filled (not included)",
                        gt_path, rec.unclosed_outlines)
        if image.dtype not in (np.uint8, np.uint16):
            raise DataError(images[idx], f"unsupported pixel type {image.dtype}")
        yield Sample(name=name, image=image, instances=[Instance(m, "nucleus") for m in masks],
                     source=f"{folder.name}/{images[idx].name}", subset="test")
    if report_file:
        write_json(report_file, {"format": "isbi2014-edf", "images": records})

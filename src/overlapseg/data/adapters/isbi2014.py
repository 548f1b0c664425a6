"""ISBI 2014 Overlapping Cervical Cytology challenge data, in either archive layout.

Layouts (found automatically in the folder given, its ``Synthetic/`` subfolder or one
level of subfolders, so users can point at the extracted folder or its parent):

* ``Train45Test90``: ``isbi_train.mat`` (``ISBI_Train``) + ``isbi_train_GT.mat`` and
  ``isbi_test90.mat`` (``ISBI_Test90``) + ``isbi_test90_GT.mat``;
* ``Dataset.zip``: ``Synthetic/trainset.mat`` (``trainset``) + ``trainset_GT.mat`` and
  ``Synthetic/testset.mat`` (``testset``) + ``testset_GT.mat``.

Ground truth holds ``{train,test}_Cytoplasm`` (n x 1 cell of k x 1 cells of one binary
mask per cell, amodal so cells overlap) and ``{train,test}_Nuclei`` (one binary mask of
all nuclei per image). Nuclei become instances by connected components and are linked
to the cell that holds most of their area (DoNet, Sec. 4.1 uses the same data and
cell-nucleus pairing). Either ``.mat`` generation (v5 or v7.3/HDF5) is accepted.

Options: ``subset`` (``all`` | ``train`` | ``test``, default ``all``), ``layout``
(``auto`` | ``Train45Test90`` | ``Dataset.zip``: which one to read when both are
extracted under ``raw``; auto fails in that case rather than guess), ``skip_empty``
(drop empty cell masks with a warning instead of failing), ``skip_duplicates`` (drop a
cell mask identical to an earlier one of the same image instead of failing).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from overlapseg.data.adapters.matlab import MatFile
from overlapseg.data.canonical import DataError, Instance, Sample

log = logging.getLogger(__name__)

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Part:
    """One subset of one archive layout: image file + ground-truth file and their keys."""

    subset: str  # "train" | "test"
    images: str
    gt: str
    image_key: str
    cyto_key: str
    nuclei_key: str


LAYOUTS: dict[str, tuple[Part, ...]] = {
    "Train45Test90": (
        Part("train", "isbi_train.mat", "isbi_train_GT.mat", "ISBI_Train",
             "train_Cytoplasm", "train_Nuclei"),
        Part("test", "isbi_test90.mat", "isbi_test90_GT.mat", "ISBI_Test90",
             "test_Cytoplasm", "test_Nuclei"),
    ),
    "Dataset.zip": (
        Part("train", "trainset.mat", "trainset_GT.mat", "trainset",
             "train_Cytoplasm", "train_Nuclei"),
        Part("test", "testset.mat", "testset_GT.mat", "testset",
             "test_Cytoplasm", "test_Nuclei"),
    ),
}
SUBSETS = ("all", "train", "test")


# ----------------------------------------------------------------------------- layout
def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively (archives differ in capitalisation)."""
    exact = folder / name
    if exact.is_file():
        return exact
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.lower() == name.lower() and child.is_file():
                return child
    return None


def _candidate_folders(raw: Path) -> list[Path]:
    folders = [raw, raw / "Synthetic"]
    if raw.is_dir():
        for child in sorted(p for p in raw.iterdir() if p.is_dir()):
            folders += [child, child / "Synthetic"]
    return [f for f in dict.fromkeys(folders) if f.is_dir()]


def find_layout(raw: Path, layout: str = "auto") -> tuple[str, Path, dict[str, tuple[Path, Path]]]:
    """Locate an ISBI 2014 layout under ``raw`` (``layout`` "auto" or one of LAYOUTS).

    Returns (layout name, folder, {subset: (images file, GT file)}) for the subsets
    present. A subset with only one of its two files is an incomplete layout and raises
    a DataError naming the missing file; two different layouts under ``raw`` in auto mode
    raise a DataError asking to choose one.
    """
    raw = Path(raw)
    if layout != "auto" and layout not in LAYOUTS:
        raise DataError(raw, f"option layout must be auto or one of {', '.join(LAYOUTS)}, "
                             f"got {layout!r}")
    matches = []
    for folder in _candidate_folders(raw):
        for name, parts in LAYOUTS.items():
            if layout not in ("auto", name):
                continue
            found: dict[str, tuple[Path, Path]] = {}
            for part in parts:
                images, gt = _find_file(folder, part.images), _find_file(folder, part.gt)
                if images and gt:
                    found[part.subset] = (images, gt)
                elif images or gt:
                    present, missing = (images, part.gt) if images else (gt, part.images)
                    raise DataError(folder / missing, f"incomplete {name} layout: missing "
                                                      f"{missing} (found {present.name})")
            if found:
                matches.append((name, folder, found))
    if len(matches) > 1:
        raise DataError(raw, "several ISBI 2014 layouts found ("
                        + ", ".join(f"{n} in {f}" for n, f, _ in matches)
                        + "); point raw at one of them or set option layout")
    if matches:
        return matches[0]
    expected = "; ".join(f"{name}: " + ", ".join(f"{p.images} + {p.gt}" for p in parts)
                         for name, parts in LAYOUTS.items() if layout in ("auto", name))
    raise DataError(raw, f"no ISBI 2014 files found here or in its subfolders (expected {expected})")


# ----------------------------------------------------------------------------- pure helpers
def as_image(value: np.ndarray, origin: Path, index: int) -> np.ndarray:
    """A MATLAB image -> uint8/uint16 (H, W[, 3]); integral or [0, 1] floats are converted."""
    img = np.asarray(value)
    if img.ndim not in (2, 3) or img.dtype == object:
        raise DataError(origin, f"image {index}: expected a 2-D image, got shape {img.shape}")
    if img.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(img)
    if img.dtype == bool:
        raise DataError(origin, f"image {index}: is a logical mask, not an image")
    if img.dtype.kind == "f" and img.size and float(np.nanmax(img)) <= 1.0 and float(np.nanmin(img)) >= 0:
        return np.round(img * 255).astype(np.uint8)
    if img.size and np.all(np.mod(img, 1) == 0) and img.min() >= 0 and img.max() <= 65535:
        return img.astype(np.uint8 if img.max() <= 255 else np.uint16)
    raise DataError(origin, f"image {index}: unsupported pixel type {img.dtype}")


def cell_masks(value) -> list[np.ndarray]:
    """The per-cell masks of one image: a cell array of 2-D masks or an (H, W, k) stack."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [np.asarray(v) for v in value.ravel(order="F")]
    arr = np.asarray(value)
    if arr.ndim == 3:
        return [arr[:, :, k] for k in range(arr.shape[2])]
    return [arr]


def nucleus_instances(nuclei: np.ndarray) -> list[np.ndarray]:
    """Nucleus masks of one image: 8-connected components of a binary mask, or the
    distinct labels when the mask is already a label image."""
    values = np.unique(nuclei)
    values = values[values != 0]
    if len(values) > 1:  # label image: each value one nucleus
        return [nuclei == v for v in values]
    labels, n = ndi.label(nuclei != 0, structure=EIGHT_CONNECTED)
    return [labels == k for k in range(1, n + 1)]


def link_nuclei(nuclei: Sequence[np.ndarray], cells: Sequence[np.ndarray]) -> list[int | None]:
    """Index of the cell owning each nucleus: the cell covering most of the nucleus; ties go
    to the smaller cell (the nucleus then sits in the overlap and the smaller cell is the
    more specific container); ``None`` when no cell touches it."""
    if not nuclei:
        return []
    if not cells:
        return [None] * len(nuclei)
    cell_stack = np.stack(cells)
    cell_area = cell_stack.reshape(len(cells), -1).sum(axis=1)
    parents: list[int | None] = []
    for nucleus in nuclei:
        ys, xs = np.nonzero(nucleus)
        if len(ys) == 0:
            parents.append(None)
            continue
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        # Pixel overlap with every cell, computed inside the nucleus' bounding box only.
        overlap = (cell_stack[(slice(None),) + box] & nucleus[box]).reshape(len(cells), -1).sum(1)
        best = overlap.max()
        if best == 0:
            parents.append(None)
            continue
        tied = np.flatnonzero(overlap == best)
        parents.append(int(tied[np.argmin(cell_area[tied])]))
    return parents


# ----------------------------------------------------------------------------- reading
def _read_part(part: Part, images_file: Path, gt_file: Path, relroot: Path, skip_empty: bool,
               skip_duplicates: bool) -> Iterator[Sample]:
    with MatFile(images_file) as img_mat, MatFile(gt_file) as gt_mat:
        img_mat.require(part.image_key)
        gt_mat.require(part.cyto_key, part.nuclei_key)
        images = img_mat.cell(part.image_key)
        cytos = gt_mat.cell(part.cyto_key)
        nucs = gt_mat.cell(part.nuclei_key)
        if not (len(images) == len(cytos) == len(nucs)):
            raise DataError(gt_file, f"{part.cyto_key} has {len(cytos)} and {part.nuclei_key} "
                                     f"{len(nucs)} entries but {images_file.name} holds "
                                     f"{len(images)} images")
        cell_num = None
        if "CellNum" in gt_mat:
            cell_num = np.asarray(gt_mat.array("CellNum")).ravel()
        width = max(3, len(str(len(images) - 1)))
        rel = images_file.relative_to(relroot) if images_file.is_relative_to(relroot) else images_file
        for i in range(len(images)):
            image = as_image(images[i], images_file, i)
            h, w = image.shape[:2]
            cells: list[np.ndarray] = []
            for k, m in enumerate(cell_masks(cytos[i])):
                if m.shape != (h, w):
                    raise DataError(gt_file, f"{part.cyto_key} image {i} cell {k}: mask size "
                                             f"{m.shape} does not match image size {(h, w)}")
                m = m != 0
                if not m.any():
                    if not skip_empty:
                        raise DataError(gt_file, f"{part.cyto_key} image {i} cell {k}: empty mask "
                                                 "(set option skip_empty: true to drop it)")
                    log.warning("%s: %s image %d cell %d: empty mask dropped", gt_file,
                                part.cyto_key, i, k)
                    continue
                if any(np.array_equal(m, c) for c in cells):
                    if not skip_duplicates:
                        raise DataError(gt_file, f"{part.cyto_key} image {i} cell {k}: duplicate "
                                                 "of an earlier cell mask (set option "
                                                 "skip_duplicates: true to drop it)")
                    log.warning("%s: %s image %d cell %d: duplicate mask dropped", gt_file,
                                part.cyto_key, i, k)
                    continue
                cells.append(m)
            if cell_num is not None and i < len(cell_num) and int(cell_num[i]) != len(cells):
                log.warning("%s: image %d: CellNum says %d cells, ground truth has %d", gt_file,
                            i, int(cell_num[i]), len(cells))
            nuclei_mask = np.asarray(nucs[i])
            if nuclei_mask.dtype == object:  # some exports store nuclei per cell as a cell array
                nuclei = [np.asarray(x) != 0 for x in cell_masks(nuclei_mask)]
                nuclei = [x for x in nuclei if x.any()]
                shapes = {x.shape for x in nuclei}
            else:
                shapes = {nuclei_mask.shape}
                nuclei = None
            if shapes - {(h, w)}:
                raise DataError(gt_file, f"{part.nuclei_key} image {i}: mask size "
                                         f"{sorted(shapes - {(h, w)})[0]} does not match image "
                                         f"size {(h, w)}")
            if nuclei is None:
                nuclei = nucleus_instances(nuclei_mask)
            parents = link_nuclei(nuclei, cells)
            instances = [Instance(c, "cytoplasm") for c in cells]
            instances += [Instance(n, "nucleus", p) for n, p in zip(nuclei, parents)]
            yield Sample(name=f"{part.subset}_{i:0{width}d}", image=image, instances=instances,
                         source=f"{rel}[{i}]", subset=part.subset)


def read(raw: Path, subset: str = "all", skip_empty: bool = False,
         skip_duplicates: bool = False, layout: str = "auto") -> Iterator[Sample]:
    """Samples ``train_000``... and ``test_000``... of the ISBI 2014 data under ``raw``."""
    raw = Path(raw)
    if subset not in SUBSETS:
        raise DataError(raw, f"option subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    layout, folder, found = find_layout(raw, layout)
    wanted = ("train", "test") if subset == "all" else (subset,)
    parts = {p.subset: p for p in LAYOUTS[layout]}
    for name in wanted:
        if name not in found:
            if subset == "all":
                log.info("%s: %s layout without its %s part; reading %s only", folder, layout,
                         name, ", ".join(found))
                continue
            missing = parts[name]
            raise DataError(folder / missing.images, f"subset {name!r} requested but the "
                                                     f"{layout} files {missing.images} and "
                                                     f"{missing.gt} are missing")
    log.info("%s: ISBI 2014 %s layout (%s)", folder, layout, ", ".join(found))
    for name in wanted:
        if name in found:
            yield from _read_part(parts[name], *found[name], relroot=raw,
                                  skip_empty=bool(skip_empty), skip_duplicates=bool(skip_duplicates))

"""Source cells for the synthesis methods (CCCE, copy-paste): pools, crops, transforms.

Shared building blocks: choosing which training images may serve as sources ("discrete" vs
"aggregated", CC-framework paper Sec. 2.1 / Table 2 rows DPETC, CEOPETC, APETC), cutting each
cell (with its nuclei) out of its image, estimating the bright background of a brightfield
image, and random geometric transforms applied identically to a crop and its masks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from overlapseg.data.canonical import CanonicalDataset, DataError, Instance, Sample

POOLS = ("discrete", "aggregated", "all")


# ----------------------------------------------------------------------------- intensities
def dtype_max(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise ValueError(f"images must be uint8 or uint16, got {dtype}")


def to_float(image: np.ndarray) -> np.ndarray:
    """uint image -> float32 (H, W, C) in [0, 1] (divided by the dtype's maximum)."""
    out = image.astype(np.float32) / dtype_max(image.dtype)
    return out[:, :, None] if out.ndim == 2 else out


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float (H, W, C) in [0, 1] -> uint image, (H, W) when single-channel."""
    top = dtype_max(np.dtype(dtype))
    out = np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)
    return out[:, :, 0] if out.shape[2] == 1 else out


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """float (H, W, C) -> (H, W, channels) (grey <-> RGB by averaging / repeating)."""
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return image.mean(axis=2, keepdims=True)
    return np.repeat(image.mean(axis=2, keepdims=True), channels, axis=2)


def estimate_background(image: np.ndarray, foreground: np.ndarray, percentile: float) -> np.ndarray:
    """Per-channel bright-background level of a float (H, W, C) image: a high percentile of the
    pixels outside every cell (all pixels if the cells cover the image)."""
    pixels = image[~foreground] if (~foreground).any() else image.reshape(-1, image.shape[2])
    return np.maximum(np.percentile(pixels, percentile, axis=0).astype(np.float32), 1e-3)


# ----------------------------------------------------------------------------- pools
def overlap_ratio(cells: np.ndarray) -> float:
    """Largest fraction of a cell's area that other cells of the image cover (0 if < 2 cells)."""
    if len(cells) < 2:
        return 0.0
    count = cells.sum(axis=0, dtype=np.int32)
    flat = cells.reshape(len(cells), -1)
    covered = (flat & (count.reshape(-1) >= 2)).sum(axis=1)
    return float((covered / np.maximum(flat.sum(axis=1), 1)).max())


def is_discrete(cells: np.ndarray, max_cells: int, max_overlap: float) -> bool:
    """Discrete (non-clustered) image: few cells *and* barely overlapping ones.

    Both conditions: the CC framework's discrete pool (DPETC, Sec. 3.1) holds isolated cells, so
    three heavily overlapping cells are a clump even though they are few.
    """
    return len(cells) <= max_cells and overlap_ratio(cells) < max_overlap


def select_pool(ds: CanonicalDataset, names: Sequence[str], pool: str = "discrete",
                max_cells_discrete: int = 3, max_overlap_ratio: float = 0.1) -> list[str]:
    """Images of ``names`` (e.g. the train split) in the requested pool, in the given order."""
    if pool not in POOLS:
        raise ValueError(f"unknown source pool {pool!r} (known: {', '.join(POOLS)})")
    missing = [n for n in names if n not in ds.images]
    if missing:
        raise DataError(ds.annotation_file, f"source images not in dataset: {missing[:5]}")
    if pool == "all":
        return list(names)
    out = []
    for name in names:
        discrete = is_discrete(ds.masks(name, "cytoplasm"), max_cells_discrete, max_overlap_ratio)
        if discrete == (pool == "discrete"):
            out.append(name)
    return out


# ----------------------------------------------------------------------------- cells
@dataclass
class CellCrop:
    """One cell cut out of its source image, with padding around its box."""

    image: np.ndarray            # float32 (h, w, C) in [0, 1]; cytoplasm covered by other
                                 # cells in the source is filled with the cell's median intensity
    mask: np.ndarray             # bool (h, w)
    nuclei: list[np.ndarray]     # bool (h, w) each
    others: np.ndarray           # bool (h, w): pixels of the source's other cells
    background: np.ndarray       # (C,) background level of the source image
    isolated: bool               # overlaps no other cell in its source image
    source: str                  # "name#index"


@dataclass
class SourceImage:
    name: str
    image: np.ndarray            # float32 (H, W, C)
    dtype: np.dtype
    background: np.ndarray       # (C,)
    sample: Sample
    cells: list[CellCrop] = field(default_factory=list)


def load_source(sample: Sample, pad: int = 2, bg_percentile: float = 90.0) -> SourceImage:
    """Float image, background level and padded crops of every cell of one sample."""
    image = to_float(sample.image)
    h, w = image.shape[:2]
    cell_idx = [k for k, inst in enumerate(sample.instances) if inst.category == "cytoplasm"]
    masks = np.stack([sample.instances[k].mask for k in cell_idx]) if cell_idx else \
        np.zeros((0, h, w), bool)
    union = masks.any(axis=0) if len(masks) else np.zeros((h, w), bool)
    count = masks.sum(axis=0, dtype=np.int32)
    background = estimate_background(image, union, bg_percentile)
    src = SourceImage(sample.name, image, sample.image.dtype, background, sample)
    for j, k in enumerate(cell_idx):
        mask = masks[j]
        nuclei = [inst.mask for inst in sample.instances
                  if inst.category == "nucleus" and inst.parent == k]
        extent = mask.copy()
        for nuc in nuclei:
            extent |= nuc
        rows = np.flatnonzero(extent.any(axis=1))
        cols = np.flatnonzero(extent.any(axis=0))
        y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)
        x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)
        win = (slice(y0, y1), slice(x0, x1))
        others = (count[win] - mask[win]) > 0
        crop = image[win].copy()
        # where a neighbour covered this cell, its density must not travel with the cell:
        # fill those pixels with the median of the cell's uncovered pixels (own nuclei kept)
        own_nuclei = np.zeros(mask[win].shape, bool)
        for nuc in nuclei:
            own_nuclei |= nuc[win]
        covered = mask[win] & others & ~own_nuclei
        free = mask[win] & ~others & ~own_nuclei
        if covered.any() and free.any():
            crop[covered] = np.median(crop[free], axis=0)
        src.cells.append(CellCrop(
            image=crop, mask=mask[win].copy(), nuclei=[n[win].copy() for n in nuclei],
            others=others, background=background,
            isolated=not bool((mask & (count >= 2)).any()), source=f"{sample.name}#{k}"))
    return src


# ----------------------------------------------------------------------------- transforms
def random_affine(h: int, w: int, rng: np.random.Generator, rotation: float,
                  scale: Sequence[float], shear: float) -> tuple[np.ndarray, int, int]:
    """Random rotation (+-``rotation`` deg), isotropic scale in ``scale`` and shear (+-) about the
    crop centre; returns the 2x3 matrix and the output size that holds the whole crop."""
    angle = np.deg2rad(rng.uniform(-rotation, rotation)) if rotation else 0.0
    s = rng.uniform(scale[0], scale[1]) if scale[0] != scale[1] else float(scale[0])
    sh = rng.uniform(-shear, shear) if shear else 0.0
    c, si = np.cos(angle), np.sin(angle)
    lin = s * np.array([[c, -si], [si, c]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64) - [w / 2, h / 2]
    moved = corners @ lin.T
    out_w = int(np.ceil(moved[:, 0].max() - moved[:, 0].min()))
    out_h = int(np.ceil(moved[:, 1].max() - moved[:, 1].min()))
    shift = np.array([out_w / 2, out_h / 2]) - lin @ np.array([w / 2, h / 2])
    return np.hstack([lin, shift[:, None]]).astype(np.float64), max(out_h, 1), max(out_w, 1)


def is_identity(matrix: np.ndarray, h: int, w: int, out_h: int, out_w: int) -> bool:
    return (out_h, out_w) == (h, w) and np.allclose(matrix, [[1, 0, 0], [0, 1, 0]])


def warp_image(image: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int,
               border: float | np.ndarray | None = None) -> np.ndarray:
    """Bilinear affine warp of a float (h, w, C) crop; ``border`` None replicates the edge."""
    kw = ({"borderMode": cv2.BORDER_REPLICATE} if border is None else
          {"borderMode": cv2.BORDER_CONSTANT, "borderValue": float(np.mean(border))})
    out = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, **kw)
    return out.reshape(out_h, out_w, image.shape[2])


def warp_mask(mask: np.ndarray, matrix: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Nearest-neighbour affine warp of a bool mask (labels must not be interpolated)."""
    return cv2.warpAffine(mask.astype(np.uint8), matrix, (out_w, out_h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def sample_instances(sample: Sample) -> list[Instance]:
    """Copies of a sample's instances (so a synthetic image never aliases its source)."""
    return [Instance(i.mask.copy(), i.category, i.parent) for i in sample.instances]


def place_cell(instances: list[Instance], window, mask: np.ndarray, nuclei, shape) -> np.ndarray:
    """Append a pasted cell (and its nuclei, linked to it) as full-frame amodal instances.

    ``window`` is the slice pair of ``shape`` the crop-sized masks were pasted into; returns the
    full-frame cell mask.
    """
    full = np.zeros(shape, bool)
    full[window] = mask
    instances.append(Instance(full, "cytoplasm"))
    parent = len(instances) - 1
    for nucleus in nuclei:
        nucleus_full = np.zeros(shape, bool)
        nucleus_full[window] = nucleus
        instances.append(Instance(nucleus_full, "nucleus", parent))
    return full

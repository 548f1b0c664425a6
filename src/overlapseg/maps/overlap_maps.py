"""Overlap-probability maps v0-v4 (brightfield thesis ``003``, Sec. 4.3 and Sec. 5.4 / Table 5.3).

Each map tells an overlap head where overlaps between cells are likely; a training loss uses it
(``overlapseg.maps.losses``). All maps are float32 in [0, 1], computed from amodal instance
masks only. The thesis describes the variants in prose; the concrete definitions used here:

* **v0** - inside every cell, the Euclidean distance from its nucleus centre, divided by the
  largest such distance within that cell (0 at the centre, 1 at the farthest border point);
  pixels in several cells take the maximum; nucleus pixels are 0 ("very low"), background
  pixels ``background``. Idea: other cells rarely lie over a nucleus, more often over the rim.
* **v1** - the same per-cell radial field without the cell-boundary limit: for the distance
  ``r`` (in units of the cell's radius) the profile is ``r`` up to the cell's own extent
  (``r <= 1``) and a Gaussian fall-off ``exp(-(r - 1)^2 / (2 w^2))`` beyond it (``w = 0.5``),
  so each cell's influence spreads into its neighbours; max-merged over cells, nucleus pixels 0.
  (Max-merging raw distances would be largest far from every cell, so the field must decay
  outside the cell.)
* **v2** - relaxation around the annotated overlap region (pixels in >= 2 cells), for weak
  overlap labels: ``exp(-d^2 / (2 sigma^2))`` of the distance ``d`` to the overlap region,
  floored at ``background``.
* **v3** - v1 and v2 max-merged.
* **v4** - the thesis' final map (Sec. 4.3): one Euclidean distance transform per cell from its
  border (distance of every pixel to that cell, 0 inside it; optionally capped at
  ``max_distance``), reduced over cells so that each
  pixel gets its distance to the *second* nearest cell (max-reduction of proximity over the
  cells other than the pixel's own; 0 inside overlaps), log-scaled,
  ``1 - log(1 + d/s) / log(1 + d_max/s)``, which falls steeply away from the places where cells
  touch or overlap, normalised to [0, 1] over cell pixels, background set to ``background``
  (0.1 in the thesis).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from overlapseg.data.canonical import CanonicalDataset, DataError
from overlapseg.data.semantic import overlap_region
from overlapseg.utils.io import atomic_dir, write_json

log = logging.getLogger(__name__)

VARIANTS = ("v0", "v1", "v2", "v3", "v4")
V1_FALLOFF = 0.5  # v1: width of the fall-off outside a cell, in cell radii
DEFAULTS = {"background": 0.1, "overlap_sigma": 8.0, "log_scale": 1.0, "max_distance": None}


# ----------------------------------------------------------------------------- helpers
def _dist_to(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel to the nearest pixel of ``mask`` (0 inside).

    scipy's EDT: exact and deterministic (OpenCV's precise L2 transform was found to return
    run-to-run differences in the last float bit, which breaks bitwise reproducibility).
    """
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    return ndi.distance_transform_edt(~mask).astype(np.float32)


def _window(mask: np.ndarray, margin: float | None) -> tuple[slice, slice]:
    """Bounding box of ``mask`` grown by ``margin`` px (whole image when margin is None)."""
    if margin is None:
        return slice(None), slice(None)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    m = int(np.ceil(margin)) + 1
    return (slice(max(rows[0] - m, 0), rows[-1] + m + 1),
            slice(max(cols[0] - m, 0), cols[-1] + m + 1))


def assign_nuclei(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Parent cell index of each nucleus (largest intersection), -1 if it touches no cell."""
    if len(nuclei) == 0 or len(cells) == 0:
        return np.full(len(nuclei), -1, dtype=np.int64)
    inter = cells.reshape(len(cells), -1).astype(np.float32) @ \
        nuclei.reshape(len(nuclei), -1).astype(np.float32).T  # (N, M)
    parent = inter.argmax(axis=0)
    parent[inter.max(axis=0) == 0] = -1
    return parent


def cell_centres(cells: np.ndarray, nuclei: np.ndarray,
                 parents: Sequence[int | None] | None = None) -> np.ndarray:
    """(N, 2) centre (row, col) of each cell: centroid of its (largest) nucleus, else the cell's
    innermost point (maximum of its inner distance transform)."""
    if parents is None:
        parent = assign_nuclei(cells, nuclei)
    else:
        if len(parents) != len(nuclei):
            raise ValueError(f"{len(parents)} parents given for {len(nuclei)} nuclei")
        parent = np.array([-1 if p is None else int(p) for p in parents], dtype=np.int64)
    areas = nuclei.reshape(len(nuclei), -1).sum(axis=1) if len(nuclei) else np.zeros(0)
    centres = np.zeros((len(cells), 2), dtype=np.float64)
    for i, cell in enumerate(cells):
        own = np.flatnonzero(parent == i)
        if len(own):
            ys, xs = np.nonzero(nuclei[own[np.argmax(areas[own])]])
            centres[i] = ys.mean(), xs.mean()
        else:
            inner = ndi.distance_transform_edt(cell)
            centres[i] = np.unravel_index(int(inner.argmax()), cell.shape)
    return centres


def _radial(cells: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, H, W) distance from each cell's centre in units of that cell's radius (its largest
    centre-to-pixel distance)."""
    h, w = cells.shape[1:]
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    cy = centres[:, 0].astype(np.float32)[:, None, None]
    cx = centres[:, 1].astype(np.float32)[:, None, None]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    radius = np.where(cells, dist, 0).reshape(len(cells), -1).max(axis=1)
    return dist / np.maximum(radius, 1.0)[:, None, None]


def _check(cells: np.ndarray, nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = np.asarray(cells, dtype=bool)
    nuclei = np.asarray(nuclei, dtype=bool)
    if cells.ndim != 3:
        raise ValueError(f"cells must be (N, H, W), got shape {cells.shape}")
    if nuclei.size == 0:
        return cells, np.zeros((0, *cells.shape[1:]), dtype=bool)
    if nuclei.ndim != 3 or nuclei.shape[1:] != cells.shape[1:]:
        raise ValueError(f"nuclei must be (M, H, W) with (H, W) = {cells.shape[1:]}, "
                         f"got {nuclei.shape}")
    return cells, nuclei


# ----------------------------------------------------------------------------- variants
def _v0(cells, nuclei, centres, background):
    radial = _radial(cells, centres)
    inside = np.where(cells, radial, -1.0).max(axis=0)
    out = np.where(inside >= 0, np.minimum(inside, 1.0), background)
    if len(nuclei):
        out[nuclei.any(axis=0)] = 0.0
    return out


def _v1(cells, nuclei, centres):
    r = _radial(cells, centres)
    out = np.where(r <= 1.0, r, np.exp(-((r - 1.0) ** 2) / (2 * V1_FALLOFF ** 2))).max(axis=0)
    if len(nuclei):
        out[nuclei.any(axis=0)] = 0.0
    return out


def _v2(cells, sigma, background):
    ov = overlap_region(cells)
    out = np.full(cells.shape[1:], background, dtype=np.float32)
    if ov.any():
        d = _dist_to(ov)
        out = np.maximum(out, np.exp(-(d * d) / (2.0 * sigma * sigma)))
    return out


def _v4(cells, background, log_scale, max_distance):
    h, w = cells.shape[1:]
    first = np.full((h, w), np.inf, dtype=np.float32)   # distance to nearest cell
    second = np.full((h, w), np.inf, dtype=np.float32)  # distance to second nearest cell
    for cell in cells:
        if not cell.any():
            continue
        win = _window(cell, max_distance)  # beyond max_distance the cell has no influence
        d = _dist_to(cell[win])
        f, s = first[win], second[win]      # views: updated in place
        np.minimum(s, np.maximum(f, d), out=s)
        np.minimum(f, d, out=f)
    if max_distance is not None:
        np.minimum(second, np.float32(max_distance), out=second)
    fg = first == 0
    out = np.full((h, w), background, dtype=np.float32)
    if not fg.any():
        return out
    d2 = second[fg]
    finite = np.isfinite(d2)
    scaled = np.zeros_like(d2)
    if finite.any():
        logd = np.log1p(d2[finite] / log_scale)
        top = logd.max()
        scaled[finite] = 1.0 - logd / top if top > 0 else 1.0
    out[fg] = scaled  # a lone cell (no second cell anywhere) gets 0
    return out


def overlap_probability_map(cells: np.ndarray, nuclei: np.ndarray, variant: str = "v4",
                            background: float = DEFAULTS["background"],
                            overlap_sigma: float = DEFAULTS["overlap_sigma"],
                            log_scale: float = DEFAULTS["log_scale"],
                            max_distance: float | None = DEFAULTS["max_distance"],
                            parents: Sequence[int | None] | None = None) -> np.ndarray:
    """Overlap-probability map (float32 (H, W), values in [0, 1]) of one image.

    cells: bool (N, H, W) amodal cell masks; nuclei: bool (M, H, W); ``parents`` optionally gives
    each nucleus's cell index (else the cell it overlaps most). See the module docstring for
    the variants. ``overlap_sigma`` (px) is v2's relaxation width, ``log_scale`` (px) v4's;
    ``max_distance`` (px, None = unlimited) caps v4's distances, so each cell's transform only
    covers its bounding box grown by that margin (faster on large images).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown overlap-map variant {variant!r} (known: {', '.join(VARIANTS)})")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background}")
    if overlap_sigma <= 0 or log_scale <= 0 or (max_distance is not None and max_distance <= 0):
        raise ValueError("overlap_sigma, log_scale and max_distance must be > 0")
    cells, nuclei = _check(cells, nuclei)
    shape = cells.shape[1:]
    if len(cells) == 0:
        return np.full(shape, background, dtype=np.float32)
    if variant == "v4":
        # only cell pixels get values and every distance is to a cell pixel, so working in the
        # bounding box of all cells is exact (and faster)
        box = _window(cells.any(axis=0), 0.0)
        out = np.full(shape, background, dtype=np.float32)
        out[box] = _v4(cells[(slice(None), *box)], background, log_scale, max_distance)
    elif variant == "v2":
        out = _v2(cells, overlap_sigma, background)
    else:
        centres = cell_centres(cells, nuclei, parents)
        if variant == "v0":
            out = _v0(cells, nuclei, centres, background)
        elif variant == "v1":
            out = _v1(cells, nuclei, centres)
        else:  # v3
            out = np.maximum(_v1(cells, nuclei, centres), _v2(cells, overlap_sigma, background))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- dataset I/O
def _parents(ds: CanonicalDataset, name: str) -> list[int | None]:
    cell_ids = [a["id"] for a in ds.annotations(name, "cytoplasm")]
    index = {aid: k for k, aid in enumerate(cell_ids)}
    return [index.get(a.get("parent_id")) for a in ds.annotations(name, "nucleus")]


def image_maps(ds: CanonicalDataset, name: str, variant: str, **params) -> dict[str, np.ndarray]:
    """``{"prob": float32 map, "overlap": uint8 GT overlap region}`` of one dataset image."""
    cells = ds.masks(name, "cytoplasm")
    nuclei = ds.masks(name, "nucleus")
    parents = _parents(ds, name)
    if any(p is None for p in parents):
        parents = None  # incomplete links: fall back to geometric assignment
    prob = overlap_probability_map(cells, nuclei, variant, parents=parents, **params)
    return {"prob": prob, "overlap": overlap_region(cells).astype(np.uint8)}


def write_maps(data_dir: str | os.PathLike, variant: str, out_dir: str | os.PathLike,
               names: Sequence[str] | None = None, **params) -> Path:
    """Write ``{name}.npz`` (``prob`` float32, ``overlap`` uint8) for the dataset's images
    (or ``names``) plus ``params.json``; the directory appears whole or not at all."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown overlap-map variant {variant!r} (known: {', '.join(VARIANTS)})")
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown overlap-map parameters {sorted(unknown)} "
                         f"(known: {', '.join(DEFAULTS)})")
    ds = CanonicalDataset(data_dir)
    names = list(ds.names if names is None else names)
    missing = [n for n in names if n not in ds.images]
    if missing:
        raise DataError(ds.annotation_file, f"images not in dataset: {missing[:5]}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for name in names:
            arrays = image_maps(ds, name, variant, **params)
            np.savez_compressed(tmp / f"{name}.npz", **arrays)
        write_json(tmp / "params.json", {"variant": variant, "data": str(data_dir),
                                         "params": {**DEFAULTS, **params}, "images": len(names)})
    log.info("wrote %d %s maps to %s", len(names), variant, out_dir)
    return out_dir


def read_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(prob, overlap) arrays of one ``{name}.npz`` map file; DataError if malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "overlap map file not found")
    try:
        with np.load(path) as f:
            prob, overlap = f["prob"], f["overlap"]
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(path, f"not a valid overlap map (.npz with prob, overlap): {exc}") from None
    return prob, overlap

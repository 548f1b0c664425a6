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

Everything is computed per instance box (``instance_overlap_map`` on ``Instance`` crops), so a
whole-slide image with hundreds of cells needs memory for a few full-size maps, not one per
cell; the values equal the full-frame definitions above bit for bit (v1's fall-off is evaluated
out to 8.5 cell radii, beyond which it underflows to exactly 0 in float32; v4's "other cells"
distance transform grows its window until no pixel outside it could be nearer).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from overlapseg.data.canonical import CanonicalDataset, DataError, Instance
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


def _grow(box: tuple[slice, slice], margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown by ``margin`` px on every side, clipped to the image."""
    (ys, xs), (h, w) = box, shape
    return (slice(max(ys.start - margin, 0), min(ys.stop + margin, h)),
            slice(max(xs.start - margin, 0), min(xs.stop + margin, w)))


def _boxes(instances: Sequence[Instance]) -> np.ndarray:
    """(N, 4) [y0, y1, x0, x1] of each instance's crop."""
    return np.array([[b[0].start, b[0].stop, b[1].start, b[1].stop]
                     for b in (i.box for i in instances)], dtype=np.int64).reshape(-1, 4)


def _paint(instances: Sequence[Instance], boxes: np.ndarray, win: tuple[slice, slice],
           skip: int = -1, only: int | None = None) -> np.ndarray:
    """Union of the instances (all but index ``skip``, or just index ``only``) inside window
    ``win``, as a bool array of the window's size."""
    (ys, xs) = win
    out = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=bool)
    if only is not None:
        hit = [only]
    else:
        hit = np.flatnonzero((boxes[:, 0] < ys.stop) & (boxes[:, 1] > ys.start)
                             & (boxes[:, 2] < xs.stop) & (boxes[:, 3] > xs.start))
    for k in hit:
        if k == skip:
            continue
        y0, y1, x0, x1 = boxes[k]
        cy0, cy1 = max(y0, ys.start), min(y1, ys.stop)
        cx0, cx1 = max(x0, xs.start), min(x1, xs.stop)
        out[cy0 - ys.start:cy1 - ys.start, cx0 - xs.start:cx1 - xs.start] |= \
            instances[k].crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out


def coverage(cells: Sequence[Instance], shape: tuple[int, int]) -> np.ndarray:
    """int32 (H, W): how many cells cover each pixel."""
    count = np.zeros(shape, dtype=np.int32)
    for cell in cells:
        count[cell.box] += cell.crop
    return count


def _as_instances(masks: np.ndarray, category: str) -> list[Instance]:
    return [Instance(m, category) for m in masks]


def _overlaps(cells: Sequence[Instance], nuclei: Sequence[Instance]) -> np.ndarray:
    """(N, M) int64 pixel counts of cell ∩ nucleus, computed on the boxes only."""
    inter = np.zeros((len(cells), len(nuclei)), dtype=np.int64)
    if not len(cells) or not len(nuclei):
        return inter
    cb = _boxes(cells)
    for j, nuc in enumerate(nuclei):
        ys, xs = nuc.box
        hit = np.flatnonzero((cb[:, 0] < ys.stop) & (cb[:, 1] > ys.start)
                             & (cb[:, 2] < xs.stop) & (cb[:, 3] > xs.start))
        for i in hit:
            inter[i, j] = int(_paint(cells, cb, nuc.box, only=i)[nuc.crop].sum())
    return inter


def assign_nuclei(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Parent cell index of each nucleus (largest intersection), -1 if it touches no cell."""
    cells, nuclei = np.asarray(cells, dtype=bool), np.asarray(nuclei, dtype=bool)
    return _assign(_as_instances(cells, "cytoplasm"), _as_instances(nuclei, "nucleus"))


def _assign(cells: Sequence[Instance], nuclei: Sequence[Instance]) -> np.ndarray:
    if len(nuclei) == 0 or len(cells) == 0:
        return np.full(len(nuclei), -1, dtype=np.int64)
    inter = _overlaps(cells, nuclei)
    parent = inter.argmax(axis=0)
    parent[inter.max(axis=0) == 0] = -1
    return parent


def _innermost(cell: Instance) -> tuple[int, int]:
    """(row, col) of the cell's maximum inner distance (first in row-major order), as a
    full-frame EDT would find it: zero padding only on sides away from the image border."""
    (ys, xs), (h, w) = cell.box, cell.shape
    pad = ((int(ys.start > 0), int(ys.stop < h)), (int(xs.start > 0), int(xs.stop < w)))
    inner = ndi.distance_transform_edt(np.pad(cell.crop, pad))
    r, c = np.unravel_index(int(inner.argmax()), inner.shape)
    return ys.start + int(r) - pad[0][0], xs.start + int(c) - pad[1][0]


def _centres(cells: Sequence[Instance], nuclei: Sequence[Instance],
             parents: Sequence[int | None] | None = None) -> np.ndarray:
    if parents is None:
        parent = _assign(cells, nuclei)
    else:
        if len(parents) != len(nuclei):
            raise ValueError(f"{len(parents)} parents given for {len(nuclei)} nuclei")
        parent = np.array([-1 if p is None else int(p) for p in parents], dtype=np.int64)
    areas = np.array([n.area for n in nuclei], dtype=np.int64)
    centres = np.zeros((len(cells), 2), dtype=np.float64)
    for i, cell in enumerate(cells):
        own = np.flatnonzero(parent == i)
        if len(own):
            nuc = nuclei[own[np.argmax(areas[own])]]
            ys, xs = np.nonzero(nuc.crop)
            centres[i] = (ys + nuc.offset[0]).mean(), (xs + nuc.offset[1]).mean()
        elif cell.crop.size:
            centres[i] = _innermost(cell)
    return centres


def cell_centres(cells: np.ndarray, nuclei: np.ndarray,
                 parents: Sequence[int | None] | None = None) -> np.ndarray:
    """(N, 2) centre (row, col) of each cell: centroid of its (largest) nucleus, else the cell's
    innermost point (maximum of its inner distance transform)."""
    cells, nuclei = _check(cells, nuclei)
    return _centres(_as_instances(cells, "cytoplasm"), _as_instances(nuclei, "nucleus"), parents)


def _radial(win: tuple[slice, slice], centre: np.ndarray, radius: np.float32) -> np.ndarray:
    """Distance from ``centre`` in units of ``radius`` over window ``win`` (float32)."""
    yy = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None]
    xx = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :]
    cy, cx = np.float32(centre[0]), np.float32(centre[1])
    dist = (yy - cy) ** 2 + (xx - cx) ** 2
    np.sqrt(dist, out=dist)
    dist /= np.maximum(radius, np.float32(1.0))
    return dist


def _cell_radius(cell: Instance, centre: np.ndarray) -> np.float32:
    """The cell's largest centre-to-pixel distance (float32, as the maps compute it)."""
    yy = np.arange(cell.box[0].start, cell.box[0].stop, dtype=np.float32)[:, None]
    xx = np.arange(cell.box[1].start, cell.box[1].stop, dtype=np.float32)[None, :]
    dist = np.sqrt((yy - np.float32(centre[0])) ** 2 + (xx - np.float32(centre[1])) ** 2)
    return np.float32(np.where(cell.crop, dist, np.float32(0)).max())


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
# Every variant works on instance boxes (crops), so memory and time grow with the instances'
# boxes rather than instances x image size; results equal the full-frame definitions.
V1_REACH = 8.5  # v1's float32 fall-off underflows to exactly 0 beyond ~8.2 cell radii


def _paint_nuclei_zero(out: np.ndarray, nuclei: Sequence[Instance]) -> None:
    for nuc in nuclei:
        out[nuc.box][nuc.crop] = 0.0


def _v0(cells, nuclei, centres, background, shape):
    inside = np.full(shape, -1.0, dtype=np.float32)
    for cell, centre in zip(cells, centres):
        if not cell.crop.size:
            continue
        radial = _radial(cell.box, centre, _cell_radius(cell, centre))
        view = inside[cell.box]
        np.maximum(view, np.where(cell.crop, radial, np.float32(-1.0)), out=view)
    out = np.where(inside >= 0, np.minimum(inside, 1.0), background).astype(np.float32)
    _paint_nuclei_zero(out, nuclei)
    return out


def _v1(cells, nuclei, centres, shape):
    out = np.zeros(shape, dtype=np.float32)  # beyond every cell's reach the fall-off is 0
    for cell, centre in zip(cells, centres):
        if not cell.crop.size:
            continue
        radius = _cell_radius(cell, centre)
        reach = int(np.ceil(V1_REACH * max(float(radius), 1.0))) + 1
        cy, cx = int(np.floor(centre[0])), int(np.floor(centre[1]))
        win = _grow((slice(cy, cy + 1), slice(cx, cx + 1)), reach, shape)
        if win[0].start >= win[0].stop or win[1].start >= win[1].stop:
            continue
        r = _radial(win, centre, radius)
        # exp(-(r - 1)^2 / (2 w^2)) outside the cell, r inside; in place (same float32 values)
        value = r - np.float32(1.0)
        np.square(value, out=value)
        value *= np.float32(-1.0 / (2 * V1_FALLOFF ** 2))
        np.exp(value, out=value)
        np.copyto(value, r, where=r <= 1.0)
        view = out[win]
        np.maximum(view, value, out=view)
    _paint_nuclei_zero(out, nuclei)
    return out


def _v2(cells, sigma, background, shape):
    ov = coverage(cells, shape) >= 2
    out = np.full(shape, background, dtype=np.float32)
    if ov.any():
        d = _dist_to(ov)
        out = np.maximum(out, np.exp(-(d * d) / (2.0 * sigma * sigma)))
    return out


def _second_distance(cells, cover, a, boxes, max_distance, shape):
    """Distance from each pixel covered by cell ``a`` alone to the nearest pixel of any other
    cell (exact; capped windows when ``max_distance`` is set). Returns (rows, cols, d)."""
    cell = cells[a]
    own = cell.crop & (cover[cell.box] == 1)
    rows, cols = np.nonzero(own)
    rows, cols = rows + cell.box[0].start, cols + cell.box[1].start
    if not len(rows):
        return rows, cols, np.zeros(0, dtype=np.float32)
    h, w = shape
    if max_distance is not None:
        margin = int(np.ceil(max_distance)) + 1  # beyond it the distance is capped anyway
    else:
        margin = max(16, max(cell.crop.shape) // 2)
    while True:
        win = _grow(cell.box, margin, shape)
        others = _paint(cells, boxes, win, skip=a)
        d = _dist_to(others)[rows - win[0].start, cols - win[1].start]
        full = win[0].start == 0 and win[1].start == 0 and win[0].stop == h and win[1].stop == w
        if max_distance is not None or full:
            return rows, cols, d
        # exact once no pixel outside the window can be nearer than the one found inside it
        inf = np.inf
        bound = np.minimum.reduce([
            rows - win[0].start + 1 if win[0].start > 0 else np.full(len(rows), inf),
            win[0].stop - rows if win[0].stop < h else np.full(len(rows), inf),
            cols - win[1].start + 1 if win[1].start > 0 else np.full(len(rows), inf),
            win[1].stop - cols if win[1].stop < w else np.full(len(rows), inf)])
        if np.all(d <= bound):
            return rows, cols, d
        margin *= 2


def _v4(cells, background, log_scale, max_distance, shape):
    cover = coverage(cells, shape)
    fg = cover > 0
    out = np.full(shape, background, dtype=np.float32)
    if not fg.any():
        return out
    second = np.full(shape, np.inf, dtype=np.float32)  # distance to the second nearest cell
    second[cover >= 2] = 0.0
    boxes = _boxes(cells)
    if len(cells) > 1:
        for a in range(len(cells)):
            if cells[a].crop.size:
                rows, cols, d = _second_distance(cells, cover, a, boxes, max_distance, shape)
                second[rows, cols] = d
    if max_distance is not None:
        np.minimum(second, np.float32(max_distance), out=second)
    d2 = second[fg]
    finite = np.isfinite(d2)
    scaled = np.zeros_like(d2)
    if finite.any():
        logd = np.log1p(d2[finite] / log_scale)
        top = logd.max()
        scaled[finite] = 1.0 - logd / top if top > 0 else 1.0
    out[fg] = scaled  # a lone cell (no second cell anywhere) gets 0
    return out


def _check_params(variant, background, overlap_sigma, log_scale, max_distance) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown overlap-map variant {variant!r} (known: {', '.join(VARIANTS)})")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must be in [0, 1], got {background}")
    for name, value in (("overlap_sigma", overlap_sigma), ("log_scale", log_scale),
                        ("max_distance", max_distance)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value}")


def instance_overlap_map(cells: Sequence[Instance], nuclei: Sequence[Instance],
                         shape: tuple[int, int], variant: str = "v4",
                         background: float = DEFAULTS["background"],
                         overlap_sigma: float = DEFAULTS["overlap_sigma"],
                         log_scale: float = DEFAULTS["log_scale"],
                         max_distance: float | None = DEFAULTS["max_distance"],
                         parents: Sequence[int | None] | None = None) -> np.ndarray:
    """``overlap_probability_map`` from box-cropped instances (``Instance`` crops) of an image
    of ``shape``: memory and time per instance box, for large images with many instances."""
    _check_params(variant, background, overlap_sigma, log_scale, max_distance)
    shape = tuple(int(v) for v in shape)
    for inst in (*cells, *nuclei):
        if tuple(inst.shape) != shape:
            raise ValueError(f"instance of image size {tuple(inst.shape)} in a map of size {shape}")
    if len(cells) == 0:
        return np.full(shape, background, dtype=np.float32)
    if variant == "v4":
        out = _v4(cells, background, log_scale, max_distance, shape)
    elif variant == "v2":
        out = _v2(cells, overlap_sigma, background, shape)
    else:
        centres = _centres(cells, nuclei, parents)
        if variant == "v0":
            out = _v0(cells, nuclei, centres, background, shape)
        elif variant == "v1":
            out = _v1(cells, nuclei, centres, shape)
        else:  # v3
            out = np.maximum(_v1(cells, nuclei, centres, shape),
                             _v2(cells, overlap_sigma, background, shape))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


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
    covers its bounding box grown by that margin (faster on large images). Empty cell masks
    are ignored. ``instance_overlap_map`` does the same from box-cropped instances.
    """
    _check_params(variant, background, overlap_sigma, log_scale, max_distance)
    cells, nuclei = _check(cells, nuclei)
    return instance_overlap_map(_as_instances(cells, "cytoplasm"), _as_instances(nuclei, "nucleus"),
                                cells.shape[1:], variant, background, overlap_sigma, log_scale,
                                max_distance, parents)


# ----------------------------------------------------------------------------- dataset I/O
def _parents(ds: CanonicalDataset, name: str) -> list[int | None]:
    cell_ids = [a["id"] for a in ds.annotations(name, "cytoplasm")]
    index = {aid: k for k, aid in enumerate(cell_ids)}
    return [index.get(a.get("parent_id")) for a in ds.annotations(name, "nucleus")]


def image_maps(ds: CanonicalDataset, name: str, variant: str, **params) -> dict[str, np.ndarray]:
    """``{"prob": float32 map, "overlap": uint8 GT overlap region}`` of one dataset image,
    computed from box-cropped instances (no (N, H, W) stacks)."""
    img = ds.images[name]
    shape = (img["height"], img["width"])
    cells = ds.instances(name, "cytoplasm")
    nuclei = ds.instances(name, "nucleus")
    parents = _parents(ds, name)
    if any(p is None for p in parents):
        parents = None  # incomplete links: fall back to geometric assignment
    prob = instance_overlap_map(cells, nuclei, shape, variant, parents=parents, **params)
    return {"prob": prob, "overlap": (coverage(cells, shape) >= 2).astype(np.uint8)}


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
    full = {**DEFAULTS, **params}
    _check_params(variant, full["background"], full["overlap_sigma"], full["log_scale"],
                  full["max_distance"])
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
                                         "params": full, "images": len(names)})
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

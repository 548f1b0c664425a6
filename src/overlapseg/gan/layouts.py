"""Instance layouts of the coarse-to-fine generator and its Table I baselines (paper ``004``).

What the layout-generating trainers draw from and render, free of any training loop:

* :class:`RealLayouts` - the real training images of one category in memory (images, masks,
  boxes, instance statistics, and on cytology data the cells around the nuclei);
* :func:`render_category` - the stage-3 condition (instance rendering) of a layout;
* :func:`cells_around` - a cell for each generated nucleus, drawn from the real (cell, nucleus)
  pairs, so that on cytology data stage 3 is conditioned on cells as well (issue 28);
* :func:`random_polygon` / :func:`polygon_layout` ("p + CycleGAN") and :func:`warp_masks`
  ("r + p2p") - the baselines' layouts;
* crops and flips shared by the stages' batches.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import cv2
import numpy as np

from overlapseg.data.canonical import CanonicalDataset
from overlapseg.data.preprocess import to_float_gray
from overlapseg.gan.coarse_to_fine import boxes_from_labels, labels_from_masks
from overlapseg.gan.pix2pix import render_instance_condition

GENERATED_CATEGORIES = ("nucleus", "cytoplasm")
CONDITION_CHANNELS = 3  # render_instance_condition: cytoplasm, nucleus, boundary


# ----------------------------------------------------------------------------- rendering
def render_category(masks: np.ndarray, category: str, boundary_width: int,
                    shape: tuple[int, ...] | None = None, cells: np.ndarray | None = None) -> np.ndarray:
    """Stage-3 condition ``(3, H, W)`` in {0, 1} of instances of one ``category``
    (:func:`~overlapseg.gan.pix2pix.render_instance_condition`): the category's channel plus the
    boundary class (``004`` Sec. II-C). ``cells`` (nuclei only): the cells around them fill the
    cytoplasm channel (cytology data); without them that channel stays empty (the paper's
    nuclei-only images)."""
    masks = np.asarray(masks, bool)
    if masks.size == 0:
        masks = np.zeros((0,) + tuple(shape if shape is not None else masks.shape[1:]), bool)
    empty = np.zeros((0,) + masks.shape[1:], bool)
    if category == "nucleus":
        around = empty if cells is None or np.asarray(cells).size == 0 else np.asarray(cells, bool)
        return render_instance_condition(around, masks, boundary_width)
    if category == "cytoplasm":
        if cells is not None:
            raise ValueError("cells are drawn around nuclei; category cytoplasm generates the cells")
        return render_instance_condition(masks, empty, boundary_width)
    raise ValueError(f"unknown category {category!r} ({' | '.join(GENERATED_CATEGORIES)})")


# ----------------------------------------------------------------------------- real data
def mask_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(centres, sizes)`` ``(N, 2)`` of each mask (middle pixel of the extent, extent in
    pixels), as :func:`~overlapseg.gan.coarse_to_fine.boxes_from_labels` but per (amodal) mask."""
    centres, sizes = [], []
    for m in np.asarray(masks, bool):
        c, s = boxes_from_labels(m.astype(np.int32))
        centres.append(c[0])
        sizes.append(s[0])
    return (np.asarray(centres, np.float64).reshape(-1, 2), np.asarray(sizes, np.float64).reshape(-1, 2))


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def cell_templates(cells: np.ndarray, nuclei: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(cell crop, nucleus centroid in the crop)`` of each nucleus lying in a cell (the cell
    covering most of its pixels), the crop spanning cell and nucleus: the shapes and nucleus
    positions :func:`cells_around` draws from."""
    out = []
    cells, nuclei = np.asarray(cells, bool), np.asarray(nuclei, bool)
    if not len(cells) or not len(nuclei):
        return out
    flat_cells = cells.reshape(len(cells), -1)
    for nucleus in nuclei:
        cover = flat_cells[:, nucleus.reshape(-1)].sum(axis=1)
        if not cover.max():
            continue
        extent = cells[int(cover.argmax())] | nucleus
        rows, cols = np.flatnonzero(extent.any(axis=1)), np.flatnonzero(extent.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        out.append((extent[box].copy(), _centroid(nucleus[box])))
    return out


def cells_around(nuclei: np.ndarray, templates: Sequence[tuple[np.ndarray, np.ndarray]],
                 rng: np.random.Generator) -> np.ndarray:
    """One cell per nucleus ``(N, H, W)``, same order: a random real (cell, nucleus) template
    (:func:`cell_templates`) under a random flip and quarter turn, placed so that its nucleus
    centroid lands on the nucleus' centroid, clipped to the image; the nucleus is added to its
    cell so it always lies inside. Cells of nearby nuclei overlap as real ones do."""
    nuclei = np.asarray(nuclei, bool)
    if not len(templates):
        raise ValueError("cells_around needs at least one real (cell, nucleus) template")
    h, w = nuclei.shape[1:]
    out = np.zeros(nuclei.shape, bool)
    for i, nucleus in enumerate(nuclei):
        if not nucleus.any():
            continue
        crop, (ty, tx) = templates[int(rng.integers(len(templates)))]
        ch, cw = crop.shape
        if rng.random() < 0.5:
            crop, tx = crop[:, ::-1], cw - 1 - tx
        for _ in range(int(rng.integers(4))):  # quarter turn counter-clockwise: (y, x) -> (w-1-x, y)
            crop, (ty, tx) = np.rot90(crop), (crop.shape[1] - 1 - tx, ty)
        gy, gx = _centroid(nucleus)
        y0, x0 = int(round(gy - ty)), int(round(gx - tx))
        ch, cw = crop.shape
        ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + ch, h), min(x0 + cw, w)
        if ya < yb and xa < xb:
            out[i, ya:yb, xa:xb] = crop[ya - y0:yb - y0, xa - x0:xb - x0]
        out[i] |= nucleus
    return out


class RealLayouts:
    """The real training images of one category, in memory: grey image in [0, 1], instance
    masks, label image (a later instance wins where masks overlap), box centres and the
    instance statistics the generators' layouts are drawn from (counts per image, equivalent
    radii, elongations). Boxes are those of the (amodal) masks. For ``nucleus`` the cells
    (cytoplasm instances) are kept as well: ``annotates_cells`` says whether the data has any,
    and ``templates`` are the (cell, nucleus) pairs :func:`cells_around` draws from.

    ``sources``: ``(dataset root, image names or None for all)`` pairs."""

    def __init__(self, sources: Iterable[tuple[str | os.PathLike, Sequence[str] | None]],
                 category: str, min_pixels: int = 1):
        if category not in GENERATED_CATEGORIES:
            raise ValueError(f"unknown category {category!r} ({' | '.join(GENERATED_CATEGORIES)})")
        self.category = category
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []   # nucleus category: the cells of each image
        self.labels: list[np.ndarray] = []
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []  # (centres, sizes) per image
        self.names: list[str] = []
        self.conditions: list[np.ndarray] = []  # stage-3 renderings, filled by the trainer
        self.box_images: list[np.ndarray] = []
        self.templates: list[tuple[np.ndarray, np.ndarray]] = []
        self.scale = 1.0
        roots = []
        for root, names in sources:
            ds = CanonicalDataset(root)
            roots.append(str(root))
            self.scale = ds.scale
            for name in names if names is not None else ds.names:
                image = to_float_gray(ds.load_image(name)).astype(np.float32)
                masks = ds.masks(name, category)
                masks = masks[masks.reshape(len(masks), -1).sum(1) >= min_pixels] if len(masks) else \
                    np.zeros((0,) + image.shape, bool)
                labels = labels_from_masks(masks) if len(masks) else np.zeros(image.shape, np.int32)
                self.images.append(image)
                self.masks.append(masks)
                self.labels.append(labels)
                self.boxes.append(mask_boxes(masks))
                self.names.append(name)
                if category == "nucleus":
                    cells = ds.masks(name, "cytoplasm")
                    self.cells.append(cells)
                    self.templates += cell_templates(cells, masks)
        if not self.images:
            raise ValueError(f"no training images in {roots}")
        if not any(len(m) for m in self.masks):
            raise ValueError(f"no {category} instances in the training images of {roots}; "
                             "choose param category")
        self.annotates_cells = bool(self.templates)
        self.counts = np.asarray([len(m) for m in self.masks], np.int64)
        radii, elongations = [], []
        for masks in self.masks:
            for m in masks:
                ys, xs = np.nonzero(m)
                radii.append(np.sqrt(len(ys) / np.pi))
                if len(ys) > 2:
                    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) + 1e-6 * np.eye(2)
                    ev = np.sort(np.linalg.eigvalsh(cov))
                    elongations.append(float(np.sqrt(ev[1] / max(ev[0], 1e-6))))
                else:
                    elongations.append(1.0)
        self.radii = np.asarray(radii, np.float64)
        self.elongations = np.clip(np.asarray(elongations, np.float64), 1.0, 4.0)

    def __len__(self) -> int:
        return len(self.images)

    def window(self, k: int, crop: int, rng: np.random.Generator,
               anchored: bool) -> tuple[slice, slice]:
        """A ``crop`` window of image ``k`` (the whole padded image if smaller); ``anchored``:
        placed so that it contains the centre of a random instance (informative crops: nuclei
        cover a small part of the image, and most uniform crops of it are empty)."""
        h, w = self.images[k].shape
        centres = self.boxes[k][0]
        anchor = centres[int(rng.integers(len(centres)))] if anchored and len(centres) else None
        starts = []
        for axis, size in enumerate((h, w)):
            hi = max(size - crop, 0)
            if anchor is not None:  # start in [c - crop + 1, c] so the window holds the centre
                lo_c = int(np.clip(np.ceil(anchor[axis] - crop + 1), 0, hi))
                hi_c = int(np.clip(np.floor(anchor[axis]), 0, hi))
                starts.append(int(rng.integers(lo_c, hi_c + 1)))
            else:
                starts.append(int(rng.integers(hi + 1)))
        return slice(starts[0], starts[0] + crop), slice(starts[1], starts[1] + crop)

    def count_in(self, k: int, window: tuple[slice, slice]) -> int:
        """Instances of image ``k`` whose box centre lies inside ``window``."""
        c = self.boxes[k][0]
        if not len(c):
            return 0
        inside = ((c[:, 0] >= window[0].start) & (c[:, 0] < window[0].stop)
                  & (c[:, 1] >= window[1].start) & (c[:, 1] < window[1].stop))
        return int(inside.sum())


def pad_to(x: np.ndarray, crop: int, mode: str = "symmetric") -> np.ndarray:
    """Pad the spatial axes of ``(C, H, W)`` up to ``crop`` (images smaller than a crop):
    mirrored for images, ``constant`` (0 = background) for point/box/mask domains."""
    pad = [(0, 0)] + [(0, max(crop - s, 0)) for s in x.shape[1:]]
    return np.pad(x, pad, mode=mode) if any(p[1] for p in pad) else x


def random_flips(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips and transpose on each ``(C, H, W)`` array."""
    for axis in (1, 2):
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    if rng.random() < 0.5:
        arrays = [a.transpose(0, 2, 1) for a in arrays]
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


def content_crop(data: RealLayouts, k: int, crop: int, rng: np.random.Generator,
                 flips: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Aligned (stage-3 condition, image) ``crop`` of real image ``k``, anchored on a random
    instance (issue 28: unanchored 64 px crops of 512 px images are mostly empty background, so
    stage 3 learned flat texture); mirrored padding for small images, the same flips in both."""
    win = data.window(k, crop, rng, anchored=True)
    cond = pad_to(data.conditions[k][(slice(None),) + win], crop)
    image = pad_to(data.images[k][win][None], crop)
    if flips:
        cond, image = random_flips([cond, image], rng)
    return np.ascontiguousarray(cond, np.float32), np.ascontiguousarray(image, np.float32)


# ----------------------------------------------------------------------------- p + CycleGAN
def random_polygon(shape: tuple[int, int], centre: np.ndarray, radius: float, elongation: float,
                   rng: np.random.Generator, n_vertices: tuple[int, int] = (8, 14),
                   jitter: float = 0.15) -> np.ndarray:
    """Filled random polygon (bool mask): vertices at sorted random angles on an ellipse of
    equivalent radius ``radius`` and axis ratio ``elongation`` (random orientation), each
    radius perturbed by ``jitter`` (relative s.d.) - a parametric nucleus/cell shape model as
    used by the "p + CycleGAN" baseline [4] of ``004`` Table I."""
    k = int(rng.integers(n_vertices[0], n_vertices[1] + 1))
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, k))
    a, b = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    r = np.clip(1.0 + rng.normal(0.0, jitter, k), 0.5, 1.5)
    theta = rng.uniform(0.0, np.pi)
    x, y = a * r * np.cos(angles), b * r * np.sin(angles)
    xr = centre[1] + x * np.cos(theta) - y * np.sin(theta)
    yr = centre[0] + x * np.sin(theta) + y * np.cos(theta)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.stack([xr, yr], 1) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def polygon_layout(shape: tuple[int, int], n: int, real: RealLayouts, rng: np.random.Generator,
                   n_vertices=(8, 14), jitter: float = 0.15, max_overlap: float = 0.0,
                   max_tries: int = 20, min_pixels: int = 8) -> np.ndarray:
    """``n`` random polygons (sizes/elongations drawn from the real instances), uniform
    positions, each accepted when at most ``max_overlap`` of its area covers earlier ones."""
    masks: list[np.ndarray] = []
    union = np.zeros(shape, bool)
    for _ in range(n):
        for _ in range(max_tries):
            centre = rng.uniform(0.0, 1.0, 2) * (np.asarray(shape) - 1)
            radius = float(real.radii[int(rng.integers(len(real.radii)))])
            elong = float(real.elongations[int(rng.integers(len(real.elongations)))])
            m = random_polygon(shape, centre, radius, elong, rng, n_vertices, jitter)
            area = int(m.sum())
            if area >= min_pixels and (m & union).sum() <= max_overlap * area:
                masks.append(m)
                union |= m
                break
    return np.stack(masks) if masks else np.zeros((0,) + tuple(shape), bool)


# ----------------------------------------------------------------------------- r + p2p
def warp_masks(masks: np.ndarray, rng: np.random.Generator, rotation: float = 180.0,
               scale=(0.8, 1.2), shear: float = 0.1, translate_frac: float = 0.1,
               elastic_alpha: float = 6.0, elastic_grid: int = 4,
               min_pixels: int = 8) -> np.ndarray:
    """Real instance masks ``(N, H, W)`` under one random affine map (rotation about the image
    centre up to ``rotation`` degrees, isotropic ``scale``, ``shear``, translation up to
    ``translate_frac`` of the size) and one smooth elastic displacement field (a
    ``elastic_grid``^2 Gaussian grid of s.d. ``elastic_alpha`` px, cubic-upsampled); each mask
    warped on its own, so overlaps are kept; masks left with < ``min_pixels`` dropped (0: every
    mask kept, in order). The random draws do not depend on the number of masks."""
    masks = np.asarray(masks, bool)
    h, w = masks.shape[1:]
    angle = rng.uniform(-rotation, rotation)
    s = rng.uniform(*scale)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, s)
    matrix = np.vstack([matrix, [0, 0, 1]])
    sh = np.array([[1, rng.uniform(-shear, shear), 0], [0, 1, 0], [0, 0, 1]])
    shift = np.array([[1, 0, rng.uniform(-translate_frac, translate_frac) * w],
                      [0, 1, rng.uniform(-translate_frac, translate_frac) * h], [0, 0, 1]])
    inverse = np.linalg.inv(shift @ matrix @ sh)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    if elastic_alpha > 0:
        coarse = rng.normal(0.0, elastic_alpha, (2, elastic_grid, elastic_grid)).astype(np.float32)
        xs = xs + cv2.resize(coarse[0], (w, h), interpolation=cv2.INTER_CUBIC)
        ys = ys + cv2.resize(coarse[1], (w, h), interpolation=cv2.INTER_CUBIC)
    map_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]).astype(np.float32)
    out = [cv2.remap(m.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool) for m in masks]
    out = [m for m in out if m.sum() >= min_pixels]
    return np.stack(out) if out else np.zeros((0, h, w), bool)

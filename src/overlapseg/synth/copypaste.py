"""Copy-paste composites on an empty canvas (brightfield thesis ``003``, Sec. 4.4.1).

The thesis composes new samples in an *additive* image domain (phase contrast there) and lets a
pix2pix model translate them into brightfield (the GAN issue). For brightfield cytology the
additive domain used here is optical density, OD = -log(I / background) (Beer-Lambert:
densities of stacked cells add). Per composite:

1. pick cells that overlap no other cell in their source image (the thesis' group of
   non-overlapping source cells), crop them with their nuclei;
2. transform crop and masks alike: resize, rotate, shift (random position) and an elastic
   deformation (a smooth random displacement field, ``cv2.remap``; nearest for masks);
3. reject a paste whose overlap ratio with the cells already pasted lies outside
   ``overlap`` (thesis: [0, 0.2]); the ratio is the larger of the covered fraction of the new
   cell and of any earlier cell;
4. add its OD, weighted by a Gaussian-blurred mask (``edge_sigma``; thesis sigma = 20 px on
   512 px images, scaled here by image size / ``edge_sigma_ref``) so the crop fades into the
   empty background. Pixels of the source's other cells are zeroed first so no fragments of
   neighbours are carried along. Data sets without isolated cells (e.g. the demo, where every
   cell overlaps another) can admit cells whose covered fraction is at most
   ``max_source_overlap``; their overlapped part is filled with the median intensity of the
   cell's free part (the neighbour's density must not come along).

The composite is written either back in intensity, ``background * exp(-OD)`` (``output:
intensity``, directly usable for training), or as the additive OD image itself scaled to the
image range (``output: additive``, the GAN's input domain). Masks are exact and amodal.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from overlapseg.data.canonical import CanonicalDataset, DataError, Instance, Sample, write_canonical_dataset
from overlapseg.synth.sources import (CellCrop, SourceImage, from_float, load_source,
                                      match_channels, place_cell, random_affine)

log = logging.getLogger(__name__)

OUTPUTS = ("intensity", "additive")


@dataclass(frozen=True)
class CopyPasteConfig:
    size: int | None = None               # canvas side; None: the first source image's size
    n_cells: tuple[int, int] = (3, 8)     # cells per composite (inclusive range)
    overlap: tuple[float, float] = (0.0, 0.2)  # accepted overlap ratio of a paste
    near_prob: float = 0.7                # chance to place a cell next to an earlier one
    max_tries: int = 30                   # placement attempts per cell
    scale: tuple[float, float] = (0.8, 1.2)
    rotation: float = 180.0
    elastic_alpha: float = 4.0            # elastic displacement amplitude, px
    elastic_grid: int = 4                 # control points per side of the displacement field
    edge_sigma: float = 20.0              # Gaussian edge blur (thesis: 20 on 512 px images)
    edge_sigma_ref: int = 512             # image size that edge_sigma refers to
    output: str = "intensity"             # intensity | additive
    bg_percentile: float = 90.0
    max_source_overlap: float = 0.0       # a source cell counts as non-overlapping up to this

    def __post_init__(self):
        lo, hi = self.overlap
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"copy-paste overlap bounds must satisfy 0 <= lo <= hi <= 1, got {self.overlap}")
        if not 1 <= self.n_cells[0] <= self.n_cells[1]:
            raise ValueError(f"copy-paste n_cells range invalid: {self.n_cells}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown copy-paste output {self.output!r} (known: {', '.join(OUTPUTS)})")
        if self.edge_sigma < 0 or self.max_tries < 1 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError("copy-paste edge_sigma >= 0, max_tries >= 1 and a valid scale range required")


def config_from_params(params: dict | None = None) -> CopyPasteConfig:
    params = dict(params or {})
    known = set(CopyPasteConfig.__dataclass_fields__)
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown copy-paste parameters {sorted(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    for key, typ in (("n_cells", int), ("overlap", float), ("scale", float)):
        if key in params:
            params[key] = tuple(typ(v) for v in params[key])
    return CopyPasteConfig(**params)


@dataclass
class _Piece:
    od: np.ndarray        # float32 (ph, pw, C) optical density weighted by the blurred-edge alpha
    mask: np.ndarray      # bool (mh, mw): the cell mask cropped to its box
    nuclei: list[np.ndarray]  # bool (mh, mw) each
    offset: tuple[int, int]   # position of the mask box inside ``od``


def _elastic_maps(oh: int, ow: int, inverse: np.ndarray, alpha: float, grid: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps for ``cv2.remap``: output pixel -> source pixel of the affine transform
    after a smooth random displacement (cubic upsampling of a coarse random grid)."""
    ys, xs = np.mgrid[:oh, :ow].astype(np.float32)
    if alpha > 0:
        coarse = rng.normal(0.0, alpha, (2, grid, grid)).astype(np.float32)
        xs = xs + cv2.resize(coarse[0], (ow, oh), interpolation=cv2.INTER_CUBIC)
        ys = ys + cv2.resize(coarse[1], (ow, oh), interpolation=cv2.INTER_CUBIC)
    map_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    map_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def make_piece(cell: CellCrop, channels: int, cfg: CopyPasteConfig, sigma: float,
               rng: np.random.Generator) -> _Piece | None:
    """Resize/rotate + elastic warp of one cell (OD crop and masks) and its blurred-edge alpha."""
    bg = match_channels(cell.background[None, None, :], channels)[0, 0]
    trans = np.clip(match_channels(cell.image, channels) / bg, 1e-3, 1.0)
    od = -np.log(trans)
    # no fragments of the source's neighbouring cells (parts of this cell that a neighbour
    # covered were already filled with the cell's median intensity, see ``load_source``)
    od[cell.others & ~cell.mask] = 0.0
    margin = int(np.ceil(2.5 * sigma))  # room for the edge fade around the cell
    od = np.pad(od, ((margin, margin), (margin, margin), (0, 0)))
    masks = [np.pad(m, margin) for m in [cell.mask, *cell.nuclei]]
    h, w = masks[0].shape
    matrix, oh, ow = random_affine(h, w, rng, cfg.rotation, cfg.scale, 0.0)
    inverse = cv2.invertAffineTransform(matrix)
    map_x, map_y = _elastic_maps(oh, ow, inverse, cfg.elastic_alpha, cfg.elastic_grid, rng)
    od = cv2.remap(od, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                   borderValue=0).reshape(oh, ow, channels)
    warped = [cv2.remap(m.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool) for m in masks]
    mask = warped[0]
    if not mask.any():
        return None
    if sigma > 0:
        # blurred mask, doubled and capped: 1 on and inside the outline, fading outside it
        alpha = np.minimum(1.0, 2.0 * _smooth_mask(mask, sigma))
    else:
        alpha = mask.astype(np.float32)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    nuclei = [n[box] for n in warped[1:] if n[box].any()]
    return _Piece((od * alpha[:, :, None]).astype(np.float32), mask[box], nuclei,
                  (int(rows[0]), int(cols[0])))


def _smooth_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a binary mask; for wide kernels computed on a grid coarsened by
    ~sigma/4 and upsampled bilinearly (the blurred mask is smooth, so this is accurate to a few
    1e-3 and many times faster than a full-resolution sigma = 20 blur)."""
    h, w = mask.shape
    k = int(max(1, min(sigma // 4, h // 4, w // 4)))
    m = mask.astype(np.float32)
    if k == 1:
        return cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    small = cv2.resize(m, (max(w // k, 1), max(h // k, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / k, borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _add_clipped(canvas: np.ndarray, piece: np.ndarray, y: int, x: int) -> None:
    """canvas[y:, x:] += piece, clipped to the canvas (y, x may be negative)."""
    h, w = canvas.shape[:2]
    ph, pw = piece.shape[:2]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + ph, h), min(x + pw, w)
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] += piece[y0 - y:y1 - y, x0 - x:x1 - x]


def paste_overlap_ratio(mask: np.ndarray, count: np.ndarray, others: Sequence[np.ndarray],
                        areas: Sequence[int]) -> float:
    """Overlap ratio of a candidate ``mask`` against earlier cells, all in window coordinates
    (``count``: cells per pixel, ``others``: each earlier cell's window, ``areas``: their full
    areas): the larger of the covered fraction of the new cell and of any earlier cell."""
    ratio = float((mask & (count > 0)).sum()) / max(int(mask.sum()), 1)
    for other, area in zip(others, areas):
        ratio = max(ratio, float((mask & other).sum()) / max(int(area), 1))
    return ratio


def copypaste_image(cells: Sequence[CellCrop], cfg: CopyPasteConfig, size: tuple[int, int],
                    channels: int, background: np.ndarray, dtype: np.dtype,
                    rng: np.random.Generator, name: str) -> tuple[Sample, list[float]]:
    """One composite; returns the sample and the accepted overlap ratio of every pasted cell."""
    h, w = size
    sigma = cfg.edge_sigma * min(h, w) / cfg.edge_sigma_ref
    od = np.zeros((h, w, channels), np.float32)
    count = np.zeros((h, w), np.int32)
    instances: list[Instance] = []
    cell_masks: list[np.ndarray] = []
    cell_areas: list[int] = []
    ratios: list[float] = []
    target = int(rng.integers(cfg.n_cells[0], cfg.n_cells[1] + 1))
    lo, hi = cfg.overlap
    centres: list[tuple[float, float, float]] = []  # (row, col, equivalent radius)
    for _ in range(target):
        piece, y, x, ratio = None, 0, 0, 0.0
        for _piece_try in range(3):  # a new cell if one cannot be placed
            piece = make_piece(cells[int(rng.integers(len(cells)))], channels, cfg, sigma, rng)
            if piece is None or piece.mask.shape[0] > h or piece.mask.shape[1] > w:
                piece = None
                continue
            ph, pw = piece.mask.shape  # the mask box must lie inside the canvas
            radius = float(np.sqrt(piece.mask.sum() / np.pi))
            for _try in range(cfg.max_tries):
                if centres and rng.random() < cfg.near_prob:
                    # next to an earlier cell: centre distance ~ sum of radii, random direction
                    cy, cx, r = centres[int(rng.integers(len(centres)))]
                    theta = rng.uniform(0, 2 * np.pi)
                    dist = (r + radius) * rng.uniform(0.7, 1.1)
                    y = int(np.clip(round(cy + dist * np.sin(theta) - ph / 2), 0, h - ph))
                    x = int(np.clip(round(cx + dist * np.cos(theta) - pw / 2), 0, w - pw))
                else:
                    y = int(rng.integers(0, h - ph + 1))
                    x = int(rng.integers(0, w - pw + 1))
                win = (slice(y, y + ph), slice(x, x + pw))
                ratio = paste_overlap_ratio(piece.mask, count[win], [m[win] for m in cell_masks],
                                            cell_areas) if cell_masks else 0.0
                if lo <= ratio <= hi:
                    break
            else:
                piece = None  # every position rejected: overlap outside the accepted range
                continue
            break
        if piece is None:
            continue
        ph, pw = piece.mask.shape
        win = (slice(y, y + ph), slice(x, x + pw))
        centres.append((y + ph / 2, x + pw / 2, radius))
        _add_clipped(od, piece.od, y - piece.offset[0], x - piece.offset[1])
        count[win] += piece.mask
        cell_masks.append(place_cell(instances, win, piece.mask, piece.nuclei, (h, w)))
        cell_areas.append(int(piece.mask.sum()))
        ratios.append(ratio)
    if cfg.output == "intensity":
        image = background[None, None, :] * np.exp(-od)
    else:
        image = od / max(float(od.max()), 1e-6)
    sample = Sample(name, from_float(image, dtype), instances,
                    source=f"copypaste cells={len(cell_masks)} output={cfg.output}", subset="synth")
    return sample, ratios


def source_cells(sources: Sequence[SourceImage], cfg: CopyPasteConfig) -> list[CellCrop]:
    """Cells that overlap no other cell of their source image (up to ``max_source_overlap``)."""
    out = []
    for src in sources:
        for cell in src.cells:
            if cell.isolated or cfg.max_source_overlap > 0 and \
                    float((cell.mask & cell.others).sum()) / cell.mask.sum() <= cfg.max_source_overlap:
                out.append(cell)
    return out


def generate_copypaste(sources: Sequence[SourceImage], n: int, seed: int, cfg: CopyPasteConfig,
                       prefix: str = "copypaste") -> Iterator[Sample]:
    """``n`` composites; image ``i`` depends only on (seed, i), not on ``n``."""
    cells = source_cells(sources, cfg)
    if not cells:
        raise ValueError("copy-paste needs source cells that overlap no other cell")
    first = sources[0]
    size = (cfg.size, cfg.size) if cfg.size else first.image.shape[:2]
    channels = first.image.shape[2]
    background = np.median(np.stack([match_channels(s.background[None, None, :], channels)[0, 0]
                                     for s in sources]), axis=0).astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        sample, _ = copypaste_image(cells, cfg, size, channels, background, first.dtype, rng,
                                    f"{prefix}_{i:05d}")
        yield sample


def load_sources(data_dir: str | os.PathLike, names: Sequence[str] | None,
                 cfg: CopyPasteConfig) -> list[SourceImage]:
    ds = CanonicalDataset(data_dir)
    names = ds.names if names is None else list(names)
    missing = [nm for nm in names if nm not in ds.images]
    if missing:
        raise DataError(ds.annotation_file, f"source images not in dataset: {missing[:5]}")
    sources = [load_source(ds.sample(nm), pad=2, bg_percentile=cfg.bg_percentile) for nm in names]
    if not source_cells(sources, cfg):
        raise DataError(ds.annotation_file, f"none of the {len(names)} source images has a cell "
                        "that overlaps no other cell (copy-paste needs such cells)")
    return sources


def write_copypaste(data_dir: str | os.PathLike, out_dir: str | os.PathLike, n: int, seed: int,
                    names: Sequence[str] | None = None, **params) -> Path:
    """Write ``n`` copy-paste composites built from ``data_dir`` (restricted to ``names``, e.g.
    the train split) as a canonical dataset (atomic)."""
    if n < 1:
        raise ValueError(f"number of copy-paste images must be >= 1, got {n}")
    cfg = config_from_params(params)
    sources = load_sources(data_dir, names, cfg)
    log.info("copy-paste: %d source cells from %d images, writing %d images",
             len(source_cells(sources, cfg)), len(sources), n)
    info = {"method": "copypaste", "seed": seed, "n": n, "params": asdict(cfg),
            "sources": [s.name for s in sources], "data": str(data_dir)}
    return write_canonical_dataset(generate_copypaste(sources, n, seed, cfg), out_dir, info=info)

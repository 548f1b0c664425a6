"""CCCE: cluster cell combination enhancement (CC-framework paper ``000``, Sec. 2.1, Algorithm 1).

Clustered training images with exact amodal instance masks are built from a few images of
discrete cells: take an initial image x0 and N donor images, cut out each donor cell (with
its nuclei), give it a random rotation/scale/shear (``cv2.warpAffine``; nearest-neighbour for
masks), an intensity jitter and Gaussian noise, and paste it at a uniformly random position
that keeps it inside the canvas. Pasting stops as soon as the foreground (union of cells)
covers more than ``th`` of the image (the paper's area threshold, here as a fraction).

Compositing of a pasted cell with what is already there (``mode``):

* ``divide`` (the paper's rule): images are scaled to [0, 1]; where the pasted cell lands on
  background its pixels replace the canvas, where it lands on existing cells the two
  intensities are added and divided by a factor drawn from ``factors`` (1.8, 2.2, 2.5). We apply
  this to the plain (not inverted) intensities: cytology cells are dark on a bright
  background, and (a + b) / f with f ~ 2 gives an overlap about as dark as the mean of the two
  cells, slightly darker for f > 2. On inverted intensities the same rule would make overlaps
  *lighter* than either cell, the opposite of what brightfield shows.
* ``absorbance`` (Beer-Lambert): intensities are transmittances relative to the bright
  background (a high percentile of the source's non-cell pixels); where cells overlap the
  transmittances multiply, elsewhere the pasted cell's transmittance is used.

Both modes first rescale a donor crop by the ratio of the canvas and donor backgrounds so
cells from differently lit images match; parts of a donor cell that a neighbour covered in
its source image are filled with the cell's median intensity. The synthetic GT overlap (pixels in >= 2 cells) is
exactly where intensities were combined, because masks are pasted whole (amodal).
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from overlapseg.data.canonical import CanonicalDataset, DataError, Sample, write_canonical_dataset
from overlapseg.synth.sources import (CellCrop, SourceImage, from_float, is_identity, load_source,
                                      match_channels, place_cell, random_affine, sample_instances,
                                      select_pool, warp_image, warp_mask)

log = logging.getLogger(__name__)

MODES = ("divide", "absorbance")


@dataclass(frozen=True)
class CCCEConfig:
    th: float = 0.35                      # stop once the cell union covers > th of the image
    mode: str = "divide"                  # divide | absorbance
    factors: tuple[float, ...] = (1.8, 2.2, 2.5)  # divide mode: overlap divisor choices
    n_donors: int = 3                     # N donor images per synthetic image (Algorithm 1)
    max_pastes: int = 60                  # safety cap on pasted cells per image
    rotation: float = 180.0               # degrees, uniform in +-rotation
    scale: tuple[float, float] = (0.85, 1.15)
    shear: float = 0.1
    gain: float = 0.15                    # intensity (or optical-density) gain jitter, +-
    bias: float = 0.03                    # divide mode: additive intensity jitter, +-
    noise_std: float = 0.01               # Gaussian noise added to a pasted cell (intensity units)
    bg_percentile: float = 90.0           # background estimate for absorbance / matching
    pool: str = "discrete"                # discrete | aggregated | all
    max_cells_discrete: int = 3
    max_overlap_ratio: float = 0.1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown CCCE mode {self.mode!r} (known: {', '.join(MODES)})")
        if not 0.0 < self.th < 1.0:
            raise ValueError(f"CCCE th must be a fraction in (0, 1), got {self.th}")
        if not self.factors or min(self.factors) <= 0:
            raise ValueError(f"CCCE factors must be positive, got {self.factors}")
        if self.n_donors < 1 or self.max_pastes < 1:
            raise ValueError("CCCE n_donors and max_pastes must be >= 1")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"CCCE scale range invalid: {self.scale}")


def config_from_params(params: dict | None = None) -> CCCEConfig:
    """CCCEConfig from a config section (lists become tuples, unknown keys are an error)."""
    params = dict(params or {})
    known = set(CCCEConfig.__dataclass_fields__)
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown CCCE parameters {sorted(unknown)} (known: {', '.join(sorted(known))})")
    for key in ("factors", "scale"):
        if key in params:
            params[key] = tuple(float(v) for v in params[key])
    return CCCEConfig(**params)


@dataclass
class _Pasted:
    image: np.ndarray          # float (h, w, C), already jittered, noisy, background-matched
    mask: np.ndarray           # bool (h, w)
    nuclei: list[np.ndarray] = field(default_factory=list)


def transform_cell(cell: CellCrop, channels: int, canvas_bg: np.ndarray, cfg: CCCEConfig,
                   rng: np.random.Generator) -> _Pasted | None:
    """Random affine warp, background matching, intensity jitter and noise of one donor cell."""
    h, w = cell.mask.shape
    matrix, oh, ow = random_affine(h, w, rng, cfg.rotation, cfg.scale, cfg.shear)
    image = match_channels(cell.image, channels)
    bg = match_channels(cell.background[None, None, :], channels)[0, 0]
    if is_identity(matrix, h, w, oh, ow):
        mask, nuclei = cell.mask, list(cell.nuclei)
    else:
        image = warp_image(image, matrix, oh, ow)
        mask = warp_mask(cell.mask, matrix, oh, ow)
        nuclei = [warp_mask(n, matrix, oh, ow) for n in cell.nuclei]
    if not mask.any():
        return None
    nuclei = [n for n in nuclei if n.any()]
    # both draws in both modes, so one seed gives the same layout in either mode
    gain = 1.0 + rng.uniform(-cfg.gain, cfg.gain) if cfg.gain else 1.0
    bias = rng.uniform(-cfg.bias, cfg.bias) if cfg.bias else 0.0
    if cfg.mode == "divide":
        image = image * (canvas_bg / bg)          # match the canvas illumination
        image = image * gain + bias
    else:  # absorbance: jitter the optical density, -log T
        trans = np.clip(image / bg, 1e-3, 1.0)
        image = canvas_bg * trans ** gain
    if cfg.noise_std:
        image = image + rng.normal(0.0, cfg.noise_std, image.shape).astype(np.float32)
    return _Pasted(np.clip(image, 0.0, 1.0).astype(np.float32), mask, nuclei)


def composite(canvas: np.ndarray, covered: np.ndarray, pasted: np.ndarray, mask: np.ndarray,
              mode: str, factor: float, background: np.ndarray) -> np.ndarray:
    """Combine a pasted crop into a canvas window (both float (h, w, C)); returns the new window.

    ``covered``: canvas pixels already inside a cell. Outside ``mask`` the window is unchanged;
    on ``mask & ~covered`` the crop replaces the canvas; on ``mask & covered`` the two are
    combined (divide: (a + b) / factor; absorbance: background * T_a * T_b).
    """
    out = canvas.copy()
    only = mask & ~covered
    both = mask & covered
    out[only] = pasted[only]
    if mode == "divide":
        out[both] = (canvas[both] + pasted[both]) / factor
    else:
        out[both] = canvas[both] * pasted[both] / background
    return np.clip(out, 0.0, 1.0)


def ccce_image(base: SourceImage, donors: Sequence[SourceImage], cfg: CCCEConfig,
               rng: np.random.Generator, name: str) -> tuple[Sample, int]:
    """One CCCE image from initial image ``base`` and ``donors`` (cycled through until the
    foreground threshold is exceeded or ``max_pastes`` cells were pasted).

    Returns the sample (base instances first, then each pasted cell followed by its nuclei) and
    the number of pasted cells.
    """
    canvas = base.image.copy()
    h, w, channels = canvas.shape
    background = base.background
    instances = sample_instances(base.sample)
    cells = [i.mask for i in instances if i.category == "cytoplasm"]
    count = np.sum(cells, axis=0, dtype=np.int32) if cells else np.zeros((h, w), np.int32)
    area = int((count > 0).sum())
    limit = cfg.th * h * w
    pasted_n = 0
    queue: list[CellCrop] = []
    for donor in donors:  # every donor's cells, each donor in random order (Algorithm 1)
        queue.extend(donor.cells[k] for k in rng.permutation(len(donor.cells)))
    attempts = 0
    while area <= limit and pasted_n < cfg.max_pastes and queue and attempts < 4 * cfg.max_pastes:
        attempts += 1
        cell = queue.pop(0)
        queue.append(cell)  # cycle: donors are reused until the threshold is reached
        item = transform_cell(cell, channels, background, cfg, rng)
        if item is None:
            continue
        ph, pw = item.mask.shape
        if ph > h or pw > w:
            continue
        y = int(rng.integers(0, h - ph + 1))
        x = int(rng.integers(0, w - pw + 1))
        win = (slice(y, y + ph), slice(x, x + pw))
        factor = float(cfg.factors[int(rng.integers(len(cfg.factors)))])
        canvas[win] = composite(canvas[win], count[win] > 0, item.image, item.mask, cfg.mode,
                                factor, background)
        count[win] += item.mask
        area = int((count > 0).sum())
        place_cell(instances, win, item.mask, item.nuclei, (h, w))
        pasted_n += 1
    source = (f"ccce base={base.name} donors={','.join(d.name for d in donors)} "
              f"pasted={pasted_n} mode={cfg.mode}")
    return Sample(name, from_float(canvas, base.dtype), instances, source=source,
                  subset="synth"), pasted_n


def generate_ccce(sources: Sequence[SourceImage], n: int, seed: int, cfg: CCCEConfig,
                  prefix: str = "ccce") -> Iterator[Sample]:
    """``n`` CCCE samples; image ``i`` depends only on (seed, i), not on ``n``."""
    donors_pool = [s for s in sources if s.cells]
    if not sources or not donors_pool:
        raise ValueError("CCCE needs at least one source image with cells")
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        base = sources[int(rng.integers(len(sources)))]
        k = min(cfg.n_donors, len(donors_pool))
        picks = rng.choice(len(donors_pool), size=k, replace=False)
        donors = [donors_pool[int(j)] for j in sorted(picks)]
        sample, _ = ccce_image(base, donors, cfg, rng, f"{prefix}_{i:05d}")
        yield sample


def load_sources(data_dir: str | os.PathLike, names: Sequence[str] | None, cfg: CCCEConfig,
                 pool: str | None = None) -> list[SourceImage]:
    """Source images of the chosen pool among ``names`` (default: all images)."""
    ds = CanonicalDataset(data_dir)
    names = ds.names if names is None else list(names)
    chosen = select_pool(ds, names, pool or cfg.pool, cfg.max_cells_discrete, cfg.max_overlap_ratio)
    if not chosen:
        which = pool or cfg.pool
        hint = (f" (discrete: <= {cfg.max_cells_discrete} cells, each at most "
                f"{cfg.max_overlap_ratio:g} covered by others; raise synth.ccce max_overlap_ratio "
                f"or max_cells_discrete)" if which == "discrete" else "")
        raise DataError(ds.annotation_file, f"no source images in pool {which!r} "
                        f"among {len(names)} candidates{hint}")
    return [load_source(ds.sample(nm), bg_percentile=cfg.bg_percentile) for nm in chosen]


def write_ccce(data_dir: str | os.PathLike, out_dir: str | os.PathLike, n: int, seed: int,
               names: Sequence[str] | None = None, **params) -> Path:
    """Write ``n`` CCCE images synthesised from ``data_dir`` (restricted to ``names``, e.g. the
    train split) as a canonical dataset (atomic)."""
    if n < 1:
        raise ValueError(f"number of CCCE images must be >= 1, got {n}")
    cfg = config_from_params(params)
    sources = load_sources(data_dir, names, cfg)
    if not any(s.cells for s in sources):
        raise DataError(data_dir, f"CCCE needs at least one source image with cells; none of the "
                        f"{len(sources)} source image(s) of pool {cfg.pool!r} has an annotated cell")
    log.info("CCCE: %d source images (pool %s), writing %d images", len(sources), cfg.pool, n)
    info = {"method": "ccce", "seed": seed, "n": n, "params": asdict(cfg),
            "sources": [s.name for s in sources], "data": str(data_dir)}
    return write_canonical_dataset(generate_ccce(sources, n, seed, cfg), out_dir, info=info)

"""The embedded demo dataset: translucent overlapping cells rendered from a seed.

Cells are smooth irregular outlines (a low-order Fourier perturbation of an ellipse) with
one nucleus each. Intensities follow Beer-Lambert: optical densities of overlapping cells add,
so overlap regions are darker, as in bright-field cytology. Cells are placed by rejection
sampling so that each new cell's overlap ratio with those already placed lies in a configured
range (the ISBI 2014 synthetic images were generated the same way, per overlap range).

The result is written in the ISBI 2014 challenge layout (``isbi_train.mat`` +
``isbi_train_GT.mat``) so that the demo study runs through the real ``isbi2014`` ingestion.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io as sio
from scipy import ndimage as ndi

from overlapseg.utils.io import atomic_path


@dataclass(frozen=True)
class DemoConfig:
    n_images: int = 24
    size: int = 256
    min_cells: int = 2
    max_cells: int = 6
    overlap: tuple[float, float] = (0.05, 0.45)  # target overlap ratio range per placed cell
    cell_radius: tuple[float, float] = (0.10, 0.17)  # fraction of image size
    nucleus_scale: tuple[float, float] = (0.22, 0.32)  # fraction of cell radius
    noise_sigma: float = 0.015
    seed: int = 0


@dataclass
class RenderedImage:
    image: np.ndarray  # uint8 (H, W)
    cells: np.ndarray  # bool (N, H, W)
    nuclei: np.ndarray  # bool (N, H, W), nucleus k belongs to cell k
    overlap_range: tuple[float, float]


def _blob_mask(size: int, center: np.ndarray, radius: float, rng: np.random.Generator,
               irregularity: float) -> np.ndarray:
    """Smooth irregular closed outline rasterised with cv2.fillPoly."""
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += irregularity / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.75, 1.0)
    angle = rng.uniform(0, np.pi)
    x, y = radius * r * np.cos(theta), radius * r * aspect * np.sin(theta)
    xr = x * np.cos(angle) - y * np.sin(angle) + center[0]
    yr = x * np.sin(angle) + y * np.cos(angle) + center[1]
    pts = np.round(np.stack([xr, yr], axis=1) * 4).astype(np.int32)  # 2 bits sub-pixel
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=2)
    return canvas.astype(bool)


def _overlap_ratio(mask: np.ndarray, others: np.ndarray) -> float:
    """Fraction of ``mask`` covered by the union of ``others``."""
    return float((mask & others).sum()) / max(int(mask.sum()), 1)


def render_image(cfg: DemoConfig, rng: np.random.Generator) -> RenderedImage:
    size = cfg.size
    n_cells = int(rng.integers(cfg.min_cells, cfg.max_cells + 1))
    lo, hi = cfg.overlap
    cells, nuclei = [], []
    union = np.zeros((size, size), bool)
    nuclei_union = np.zeros((size, size), bool)
    cluster = rng.uniform(0.35, 0.65, size=2) * size
    for _ in range(200 * n_cells):
        if len(cells) == n_cells:
            break
        radius = rng.uniform(*cfg.cell_radius) * size
        # First cell near the cluster centre, then near existing cells so overlaps happen.
        if cells:
            pixels = np.argwhere(cells[rng.integers(len(cells))])
            anchor = pixels[rng.integers(len(pixels))][::-1].astype(float)
        else:
            anchor = cluster
        center = anchor + rng.normal(0, radius, size=2)
        if np.any(center < radius * 0.6) or np.any(center > size - radius * 0.6):
            continue
        cell = _blob_mask(size, center, radius, rng, irregularity=0.35)
        # Cells touching the image border would be cut; the challenge images keep cells whole.
        if cell[0].any() or cell[-1].any() or cell[:, 0].any() or cell[:, -1].any():
            continue
        if cells:
            # Largest covered fraction, of the new cell or of any cell already placed.
            ratio = max([_overlap_ratio(cell, union)] + [_overlap_ratio(c, cell) for c in cells])
            if not lo <= ratio <= hi:
                continue
        nucleus_center = center + rng.normal(0, 0.12 * radius, size=2)
        nucleus = _blob_mask(size, nucleus_center, rng.uniform(*cfg.nucleus_scale) * radius, rng,
                             irregularity=0.1) & cell
        # Nuclei must stay separate components, as in the challenge's single nuclei mask.
        if not nucleus.any() or (ndi.binary_dilation(nucleus, iterations=2) & nuclei_union).any():
            continue
        cells.append(cell)
        nuclei.append(nucleus)
        union |= cell
        nuclei_union |= nucleus
    cells_arr = np.array(cells, dtype=bool).reshape(-1, size, size)
    nuclei_arr = np.array(nuclei, dtype=bool).reshape(-1, size, size)

    # Beer-Lambert: transmitted = background * exp(-sum of optical densities).
    background = rng.uniform(0.80, 0.92) + ndi.gaussian_filter(rng.normal(0, 0.6, (size, size)), size / 16)
    od = np.zeros((size, size))
    texture = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 2.0)
    for cell, nucleus in zip(cells_arr, nuclei_arr):
        soft = ndi.gaussian_filter(cell.astype(float), 1.0)
        od += soft * rng.uniform(0.18, 0.35) * (1 + 0.15 * texture)
        od += ndi.gaussian_filter(nucleus.astype(float), 0.8) * rng.uniform(0.6, 0.9)
    intensity = background * np.exp(-od) + rng.normal(0, cfg.noise_sigma, (size, size))
    image = np.clip(np.round(intensity * 255), 0, 255).astype(np.uint8)
    return RenderedImage(image, cells_arr, nuclei_arr, (lo, hi))


def render_dataset(cfg: DemoConfig) -> list[RenderedImage]:
    rng = np.random.default_rng(cfg.seed)
    return [render_image(cfg, rng) for _ in range(cfg.n_images)]


def _cell_array(items: list) -> np.ndarray:
    """A MATLAB n x 1 cell array (numpy object array) holding ``items``."""
    out = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        out[k, 0] = item
    return out


def write_demo_isbi(out_dir: str | os.PathLike, cfg: DemoConfig) -> Path:
    """Render the demo and write ``isbi_train.mat`` / ``isbi_train_GT.mat`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_dataset(cfg)
    images = _cell_array([r.image for r in rendered])
    cytoplasm = _cell_array([_cell_array([c.astype(np.uint8) for c in r.cells]) for r in rendered])
    nuclei = _cell_array([r.nuclei.any(axis=0).astype(np.uint8) for r in rendered])
    cell_num = np.array([[len(r.cells)] for r in rendered], dtype=np.uint8)
    overlap = np.array([r.overlap_range for r in rendered], dtype=float)
    # GT first, images last: the image file is the rule's declared output, so a crash
    # in between never leaves a complete-looking raw folder.
    with atomic_path(out_dir / "isbi_train_GT.mat") as tmp:
        tmp.write_bytes(mat_bytes({"train_Cytoplasm": cytoplasm, "train_Nuclei": nuclei,
                                   "CellNum": cell_num, "OverlapRatio": overlap}))
    with atomic_path(out_dir / "isbi_train.mat") as tmp:
        tmp.write_bytes(mat_bytes({"ISBI_Train": images}))
    return out_dir


_MAT_HEADER_TEXT = 116  # bytes of free text at the start of a MAT 5 file


def mat_bytes(variables: dict) -> bytes:
    """A compressed MAT 5 file without the creation time savemat puts in its text header, so
    the same seed gives the same raw files byte for byte (their sha256 is in every audit)."""
    buffer = io.BytesIO()
    sio.savemat(buffer, variables, do_compression=True)
    text = b"MATLAB 5.0 MAT-file, written by overlapseg.data.demo"
    return text.ljust(_MAT_HEADER_TEXT, b" ") + buffer.getvalue()[_MAT_HEADER_TEXT:]

"""Semantic (per-pixel) targets derived from amodal instance masks.

Shared by the semantic models (training targets) and the evaluator (pixel metrics), so both
define "overlap" and "border" identically.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

SEMANTIC_CLASSES = ("cytoplasm", "nucleus", "overlap", "border", "background")


def cell_borders(cells: np.ndarray, width: int = 2) -> np.ndarray:
    """Union of each cell's inner boundary band of ``width`` pixels (cells: bool (N, H, W))."""
    border = np.zeros(cells.shape[1:], dtype=bool)
    structure = ndi.generate_binary_structure(2, 1)
    for mask in cells:
        inner = ndi.binary_erosion(mask, structure=structure, iterations=width, border_value=0)
        border |= mask & ~inner
    return border


def overlap_region(cells: np.ndarray) -> np.ndarray:
    """Pixels covered by two or more cells."""
    if len(cells) == 0:
        return np.zeros(cells.shape[1:], dtype=bool)
    return cells.sum(axis=0, dtype=np.int32) >= 2


def semantic_targets(cells: np.ndarray, nuclei: np.ndarray, border_width: int = 2) -> dict[str, np.ndarray]:
    """Binary uint8 maps for every class in ``SEMANTIC_CLASSES`` from (N, H, W) and (M, H, W) masks."""
    shape = cells.shape[1:] if cells.ndim == 3 and len(cells) else nuclei.shape[1:]
    cytoplasm = cells.any(axis=0) if len(cells) else np.zeros(shape, dtype=bool)
    nucleus = nuclei.any(axis=0) if len(nuclei) else np.zeros(shape, dtype=bool)
    border = cell_borders(cells, border_width) if len(cells) else np.zeros(shape, dtype=bool)
    out = {
        "cytoplasm": cytoplasm,
        "nucleus": nucleus,
        "overlap": overlap_region(cells) if len(cells) else np.zeros(shape, dtype=bool),
        "border": border,
        "background": ~cytoplasm,
    }
    return {k: v.astype(np.uint8) for k, v in out.items()}

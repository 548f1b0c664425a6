"""Image normalisation shared by all models."""
from __future__ import annotations

import numpy as np


def to_float_gray(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 grayscale or RGB -> float32 (H, W) in [0, 1].

    Colour is averaged to gray (the cytology and brightfield stains here carry the cell
    signal in brightness). 8-bit images are scaled by 255; 16-bit microscopy rarely uses
    the full range, so it is stretched between its 0.5 and 99.5 percentiles.
    """
    img = image.astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2)
    if image.dtype == np.uint8:
        return img / 255.0
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)

"""Pixel scale: models see test images at the pixel scale they were trained on.

torchvision's ``GeneralizedRCNNTransform`` resizes every image so its shorter side equals
``min_size`` (capped by ``max_size``): with ``min_size = max_size = 512`` a 1024 px image of the
same acquisition is shrunk 2x before detection (cells and nuclei half their trained size).
:class:`NativeScaleTransform` keeps the normalisation and batching and drops the resize;
differences in acquisition scale are handled explicitly by :func:`resample` from the datasets'
declared ``scale``, and large images by tiling (:func:`tile_windows`, :func:`owner_of`).
"""
from __future__ import annotations

import cv2
import numpy as np
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class NativeScaleTransform(GeneralizedRCNNTransform):
    """Normalise and batch like torchvision, but never resize (images keep their pixel scale)."""

    def resize(self, image, target=None):
        return image, target


def native_transform(transform: GeneralizedRCNNTransform) -> NativeScaleTransform:
    """The same normalisation/padding as ``transform``, without its fixed-size resize."""
    return NativeScaleTransform(transform.min_size, transform.max_size, transform.image_mean,
                                transform.image_std, size_divisible=transform.size_divisible,
                                fixed_size=transform.fixed_size)


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize a 2-D float image by ``factor`` (area averaging when shrinking)."""
    h, w = image.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), size, interpolation=interp)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary mask to ``shape`` (bilinear on the 0/1 mask, then >= 0.5)."""
    h, w = shape
    out = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out >= 0.5


def tile_windows(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles along one axis as ``(start, stop, own_start, own_stop)``.

    Consecutive tiles overlap by at least ``overlap`` pixels; each tile *owns* the part of the
    axis up to the middle of its overlaps, so every position has exactly one owner tile.
    """
    if size <= tile:
        return [(0, size, 0, size)]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be in [0, tile={tile})")
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    bounds = [0] + [(prev + tile + s) // 2 for prev, s in zip(starts, starts[1:])] + [size]
    return [(s, s + tile, bounds[k], bounds[k + 1]) for k, s in enumerate(starts)]


def owner_of(centre: float, own_start: int, own_stop: int) -> bool:
    """Whether an instance centred at ``centre`` (full-image coordinate) belongs to this tile."""
    return own_start <= centre < own_stop

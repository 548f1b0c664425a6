"""Tiled (sliding-window) inference with overlapping tiles averaged.

Brightfield thesis Sec. 5.1: 512x512 windows with a 256 pixel step over the full image, the
per-pixel outputs of all windows covering a pixel averaged. Tiles are placed every ``stride``
pixels and one more tile is anchored at the far edge so the whole image is covered; images
smaller than a tile are reflect-padded and cropped back. Accumulation is in float64, so a
model that returns its input reassembles the image exactly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` (size >= tile)."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile and stride must be positive, got tile={tile}, stride={stride}")
    if stride > tile:
        raise ValueError(f"stride {stride} > tile {tile} would leave gaps")
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


@torch.no_grad()
def sliding_window(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                   tile: int = 512, stride: int = 256, batch_size: int = 4) -> torch.Tensor:
    """Apply ``fn`` ((B, C, t, t) -> (B, K, t, t)) over ``image`` (C, H, W); return (K, H, W).

    Outputs of overlapping tiles are averaged per pixel. The result is float32 on the
    image's device.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(image.shape)}")
    _, h, w = image.shape
    ph, pw = max(0, tile - h), max(0, tile - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        image = F.pad(image[None], (0, pw, 0, ph), mode=mode)[0]
    H, W = image.shape[1:]
    coords = [(y, x) for y in tile_starts(H, tile, stride) for x in tile_starts(W, tile, stride)]
    acc = count = None
    for i in range(0, len(coords), batch_size):
        chunk = coords[i:i + batch_size]
        batch = torch.stack([image[:, y:y + tile, x:x + tile] for y, x in chunk])
        out = fn(batch).to(torch.float64)
        if out.shape[0] != len(chunk) or out.shape[-2:] != (tile, tile):
            raise ValueError(f"model output shape {tuple(out.shape)} does not match tiles "
                             f"({len(chunk)}, K, {tile}, {tile})")
        if acc is None:
            acc = torch.zeros((out.shape[1], H, W), dtype=torch.float64, device=out.device)
            count = torch.zeros((1, H, W), dtype=torch.float64, device=out.device)
        for (y, x), o in zip(chunk, out):
            acc[:, y:y + tile, x:x + tile] += o
            count[:, y:y + tile, x:x + tile] += 1
    return (acc / count)[:, :h, :w].to(torch.float32)


def sliding_window_numpy(fn: Callable[[torch.Tensor], torch.Tensor], image: np.ndarray,
                         tile: int = 512, stride: int = 256, batch_size: int = 4,
                         device: str = "cpu") -> np.ndarray:
    """Convenience wrapper: (H, W) or (C, H, W) float array -> (K, H, W) float32 array."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    out = sliding_window(fn, torch.from_numpy(np.ascontiguousarray(arr)).to(device), tile, stride,
                         batch_size)
    return out.cpu().numpy()

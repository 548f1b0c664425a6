"""Figures of the data-side methods: overlap-probability maps v0-v4, CCCE (divide vs absorbance)
and copy-paste composites. PNG + PDF without timestamps (``utils.plotting.save_figure``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage import measure  # noqa: E402

from overlapseg.data.canonical import CanonicalDataset, DataError, Sample  # noqa: E402
from overlapseg.maps.overlap_maps import VARIANTS, read_map  # noqa: E402
from overlapseg.utils.plotting import save_figure  # noqa: E402
from overlapseg.synth import ccce  # noqa: E402
from overlapseg.synth.sources import select_pool  # noqa: E402

VARIANT_TITLES = {"v0": "v0 nucleus distance", "v1": "v1 unbounded", "v2": "v2 overlap-relaxed",
                  "v3": "v3 = max(v1, v2)", "v4": "v4 border EDT (final)"}


def _show(ax, image: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest",
              vmin=0, vmax=np.iinfo(image.dtype).max if image.dtype.kind == "u" else None)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _contours(ax, masks: Sequence[np.ndarray], categories: Sequence[str]) -> None:
    cmap = plt.get_cmap("tab10")
    k = 0
    for mask, cat in zip(masks, categories):
        colour = cmap(k % 10) if cat == "cytoplasm" else "yellow"
        k += cat == "cytoplasm"
        for c in measure.find_contours(np.pad(mask, 1).astype(np.uint8), 0.5):
            ax.plot(c[:, 1] - 1, c[:, 0] - 1, color=colour,
                    linewidth=0.8 if cat == "cytoplasm" else 0.5)


def _show_sample(ax, sample: Sample, title: str) -> None:
    _show(ax, sample.image, title)
    _contours(ax, [i.mask for i in sample.instances], [i.category for i in sample.instances])


def _most_overlap(ds: CanonicalDataset, names: Sequence[str]) -> str:
    """The image with the largest cell-overlap area (ties: first name), the informative case."""
    best, best_score = names[0], -1
    for name in names:
        score = int((ds.masks(name, "cytoplasm").sum(axis=0) >= 2).sum())
        if score > best_score:
            best, best_score = name, score
    return best


def maps_figure(data_dir: str | os.PathLike, maps_dirs: dict[str, str | os.PathLike],
                stem: str | os.PathLike, names: Sequence[str] | None = None) -> list[Path]:
    """Real image with instance contours | the map variants present in ``maps_dirs``, for the
    (up to two) images with the most overlap among ``names``."""
    ds = CanonicalDataset(data_dir)
    names = list(names or ds.names)
    picked = []
    pool = list(names)
    for _ in range(min(2, len(pool))):
        name = _most_overlap(ds, pool)
        picked.append(name)
        pool.remove(name)
    variants = [v for v in VARIANTS if v in maps_dirs]
    fig, axes = plt.subplots(len(picked), 1 + len(variants),
                             figsize=(2.0 * (1 + len(variants)), 2.1 * len(picked)), squeeze=False)
    for row, name in zip(axes, picked):
        _show_sample(row[0], ds.sample(name), f"{name} (GT contours)")
        for ax, v in zip(row[1:], variants):
            prob, overlap = read_map(Path(maps_dirs[v]) / f"{name}.npz")
            ax.imshow(prob, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            if overlap.any():
                ax.contour(overlap, levels=[0.5], colors="cyan", linewidths=0.5)
            ax.set_title(VARIANT_TITLES[v], fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Overlap-probability maps (cyan: GT overlap region)", fontsize=8)
    return save_figure(fig, stem)


def ccce_figure(data_dir: str | os.PathLike, names: Sequence[str] | None, params: dict,
                seed: int, stem: str | os.PathLike, n: int = 4) -> list[Path]:
    """Row 1: discrete source images; rows 2-3: CCCE outputs from the same seeds in ``divide``
    and ``absorbance`` mode (all other parameters from ``params``), with instance contours."""
    params = {k: v for k, v in params.items() if k not in ("n", "seed", "mode")}
    ds = CanonicalDataset(data_dir)
    names = list(names or ds.names)
    cfgs = {m: ccce.config_from_params({**params, "mode": m}) for m in ccce.MODES}
    pool = select_pool(ds, names, cfgs["divide"].pool, cfgs["divide"].max_cells_discrete,
                       cfgs["divide"].max_overlap_ratio)
    if not pool:
        raise DataError(ds.annotation_file, "no source images in the CCCE pool")
    fig, axes = plt.subplots(3, n, figsize=(2.1 * n, 6.6), squeeze=False)
    for ax, name in zip(axes[0], pool[:n]):
        _show_sample(ax, ds.sample(name), f"source {name}")
    for ax in axes[0][len(pool[:n]):]:
        ax.axis("off")
    for row, mode in zip(axes[1:], ccce.MODES):
        sources = ccce.load_sources(data_dir, names, cfgs[mode])
        for ax, sample in zip(row, ccce.generate_ccce(sources, n, seed, cfgs[mode])):
            _show_sample(ax, sample, f"CCCE {mode}: {sample.name}")
    fig.suptitle("CCCE: discrete sources (top) and synthetic clusters, divide vs absorbance "
                 "compositing (same seeds)", fontsize=8)
    return save_figure(fig, stem)


def dataset_figure(data_dir: str | os.PathLike, stem: str | os.PathLike, title: str,
                   n: int = 8) -> list[Path]:
    """First ``n`` images of a (synthetic) canonical dataset with instance contours."""
    ds = CanonicalDataset(data_dir)
    names = ds.names[:n]
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        _show_sample(ax, ds.sample(name), name)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, stem)

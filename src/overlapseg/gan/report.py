"""Real vs generated images: side-by-side figure and image-quality summary of a GAN set.

Quality numbers are weight-free statistics that always run (grey-level histogram distance to
the real training images, edge alignment of generated images with their masks next to the
real images' own) plus FID only when Inception weights exist as a local file; otherwise the
summary says "not computed" with the reason, never a number.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from overlapseg.data.canonical import CanonicalDataset
from overlapseg.gan.quality import fid, intensity_distance, mean_edge_alignment
from overlapseg.utils.io import write_json


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    from overlapseg.data.preprocess import to_float_gray

    return np.round(to_float_gray(image) * 255).astype(np.uint8)


def quality_summary(real_dir, real_names: Sequence[str], synth_dir,
                    fid_weights: str | os.PathLike | None = None) -> dict:
    real_ds, synth_ds = CanonicalDataset(real_dir), CanonicalDataset(synth_dir)
    real = [_grey_uint8(real_ds.load_image(n)) for n in real_names]
    fake = [_grey_uint8(synth_ds.load_image(n)) for n in synth_ds.names]
    masks_real = [real_ds.masks(n, "cytoplasm") for n in real_names]
    masks_fake = [synth_ds.masks(n, "cytoplasm") for n in synth_ds.names]
    value, note = fid(real, fake, fid_weights)
    return {"n_real": len(real), "n_generated": len(fake),
            "intensity_distance": round(intensity_distance(real, fake), 6),
            "edge_alignment_generated": {k: round(float(v), 6) for k, v in
                                         mean_edge_alignment(fake, masks_fake).items()},
            "edge_alignment_real": {k: round(float(v), 6) for k, v in
                                    mean_edge_alignment(real, masks_real).items()},
            "fid": value, "fid_note": note}


def write_quality(path, **kwargs) -> dict:
    summary = quality_summary(**kwargs)
    write_json(path, summary)
    return summary


def side_by_side_figure(real_dir, real_names: Sequence[str], synth_dir, condition: str,
                        out_png, out_pdf, n: int = 3, boundary_width: int = 2) -> None:
    """Rows: real images with their conditions, generated images with theirs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from overlapseg.data.preprocess import to_float_gray
    from overlapseg.train.gan import condition_image

    real_ds, synth_ds = CanonicalDataset(real_dir), CanonicalDataset(synth_dir)
    rows = [("real", real_ds, list(real_names)[:n]), ("generated", synth_ds, synth_ds.names[:n])]
    fig, axes = plt.subplots(2, 2 * n, figsize=(2.2 * 2 * n, 4.8), squeeze=False)
    for r, (kind, ds, names) in enumerate(rows):
        for c in range(n):
            ax_cond, ax_img = axes[r, 2 * c], axes[r, 2 * c + 1]
            for ax in (ax_cond, ax_img):
                ax.axis("off")
            if c >= len(names):
                continue
            image = to_float_gray(ds.load_image(names[c]))
            cond = condition_image(condition, image, ds.masks(names[c], "cytoplasm"),
                                   ds.masks(names[c], "nucleus"), boundary_width)
            ax_cond.imshow(np.moveaxis(cond, 0, -1) if len(cond) == 3 else cond[0], cmap="gray",
                           vmin=0, vmax=1)
            ax_cond.set_title(f"{kind}: condition", fontsize=7)
            ax_img.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax_img.set_title(f"{kind}: {names[c]}", fontsize=7)
    fig.suptitle(f"pix2pix ({condition} -> image): real vs generated", fontsize=9)
    fig.tight_layout()
    from overlapseg.utils.io import atomic_path

    for path, kwargs in ((out_png, {"dpi": 120, "metadata": {"Software": None}}),
                         (out_pdf, {"metadata": {"CreationDate": None, "Creator": None,
                                                 "Producer": None}})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], **kwargs)
    plt.close(fig)

"""Real vs generated images: side-by-side figure and image-quality summary of a GAN set.

Quality numbers are weight-free statistics that always run, each next to the real training
images' own (grey-level histogram distance, GLCM texture, fraction of images with at least one
instance, edge alignment of the images with their masks) plus FID only when Inception weights
exist as a local file; otherwise the summary says "not computed" with the reason, never a
number. Nothing here loads a trained model (``gan`` never imports ``train``): the stage
figure takes the generator's outputs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from overlapseg.data.canonical import CanonicalDataset
from overlapseg.gan.coarse_to_fine import labels_from_masks
from overlapseg.gan.layouts import render_category
from overlapseg.gan.pix2pix import condition_image, instance_boundaries
from overlapseg.gan.quality import (fid, instance_fraction, intensity_distance, mean_edge_alignment,
                                    overlap_density_ratio, texture_statistics)
from overlapseg.utils.io import write_json


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    from overlapseg.data.preprocess import to_float_gray

    return np.round(to_float_gray(image) * 255).astype(np.uint8)


def quality_summary(real_dir, real_names: Sequence[str], synth_dir,
                    fid_weights: str | os.PathLike | None = None, category: str = "cytoplasm") -> dict:
    """Quality numbers of the generated set next to the same numbers of the real images:
    grey-level histogram distance, GLCM texture, fraction of images with at least one instance
    (any category), optical density of cytoplasm overlaps over single cells, edge alignment with the masks of ``category`` (the one a coarse-to-fine
    generator annotates), and FID when possible."""
    real_ds, synth_ds = CanonicalDataset(real_dir), CanonicalDataset(synth_dir)
    real = [_grey_uint8(real_ds.load_image(n)) for n in real_names]
    fake = [_grey_uint8(synth_ds.load_image(n)) for n in synth_ds.names]
    masks_real = [real_ds.masks(n, category) for n in real_names]
    masks_fake = [synth_ds.masks(n, category) for n in synth_ds.names]
    value, note = fid(real, fake, fid_weights)

    def rounded(d: dict) -> dict:
        return {k: None if v is None else round(float(v), 6) for k, v in d.items()}

    return {"n_real": len(real), "n_generated": len(fake),
            "intensity_distance": round(intensity_distance(real, fake), 6),
            "texture_generated": rounded(texture_statistics(fake)),
            "texture_real": rounded(texture_statistics(real)),
            "with_instances_generated": round(instance_fraction(
                [len(synth_ds.annotations(n)) for n in synth_ds.names]), 6),
            "with_instances_real": round(instance_fraction(
                [len(real_ds.annotations(n)) for n in real_names]), 6),
            "edge_alignment_generated": rounded(mean_edge_alignment(fake, masks_fake)),
            "edge_alignment_real": rounded(mean_edge_alignment(real, masks_real)),
            # cytoplasm overlaps darker than single cells (None: no image with overlaps)
            "overlap_density_ratio_generated": _maybe_round(overlap_density_ratio(
                fake, [synth_ds.masks(n, "cytoplasm") for n in synth_ds.names])),
            "overlap_density_ratio_real": _maybe_round(overlap_density_ratio(
                real, [real_ds.masks(n, "cytoplasm") for n in real_names])),
            "fid": value, "fid_note": note}


def _maybe_round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def write_quality(path, **kwargs) -> dict:
    summary = quality_summary(**kwargs)
    write_json(path, summary)
    return summary


def _wrapped(text: str, width: int = 24) -> str:
    """A panel title on lines of ``width`` characters: neighbouring titles never overlap."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def with_instances(ds: CanonicalDataset, names: Sequence[str], n: int, category: str | None = None) -> list[str]:
    """The first ``n`` of ``names`` that hold at least one instance (of ``category``), then, if
    too few have any, the empty ones (their panels say so): a sample figure shows what the set
    is made of, not blank tiles."""
    names = list(names)
    full = [nm for nm in names if ds.annotations(nm, category)]
    return (full + [nm for nm in names if nm not in set(full)])[:n]


def _no_instances(ax, what: str = "instances") -> None:
    ax.text(0.5, 0.5, f"no {what}", transform=ax.transAxes, ha="center", va="center", fontsize=7,
            color="white", bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})


def side_by_side_figure(real_dir, real_names: Sequence[str], synth_dir, condition: str,
                        out_png, out_pdf, n: int = 3, boundary_width: int = 2,
                        category: str | None = None) -> None:
    """Rows: real images with their conditions, generated images with theirs (images that hold
    instances first, :func:`with_instances`). With ``category`` (generators of one category)
    the condition is that category's rendering. Row names on the left, wrapped panel titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from overlapseg.data.preprocess import to_float_gray

    real_ds, synth_ds = CanonicalDataset(real_dir), CanonicalDataset(synth_dir)
    rows = [("real", real_ds, with_instances(real_ds, real_names, n, category)),
            ("generated", synth_ds, with_instances(synth_ds, synth_ds.names, n, category))]
    fig, axes = plt.subplots(2, 2 * n, figsize=(2.2 * 2 * n, 5.2), squeeze=False)
    for r, (kind, ds, names) in enumerate(rows):
        for c in range(n):
            ax_cond, ax_img = axes[r, 2 * c], axes[r, 2 * c + 1]
            for ax in (ax_cond, ax_img):
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if c >= len(names):
                continue
            image = to_float_gray(ds.load_image(names[c]))
            if category is not None:
                cond = render_category(ds.masks(names[c], category), category, boundary_width,
                                       image.shape)
            else:
                cond = condition_image(condition, image, ds.masks(names[c], "cytoplasm"),
                                       ds.masks(names[c], "nucleus"), boundary_width)
            ax_cond.imshow(np.moveaxis(cond, 0, -1) if len(cond) == 3 else cond[0], cmap="gray",
                           vmin=0, vmax=1)
            n_inst = len(ds.annotations(names[c], category))
            what = f"{category} instance" if category else "instance"
            ax_cond.set_title(_wrapped(f"condition ({n_inst} {what}{'' if n_inst == 1 else 's'})"), fontsize=7)
            what += "s"
            if not n_inst:
                _no_instances(ax_cond, what)
            ax_img.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax_img.set_title(_wrapped(names[c]), fontsize=7)
        axes[r, 0].set_ylabel(kind, fontsize=9)
    fig.suptitle(f"{category} generator: real (top) vs generated (bottom)" if category else
                 f"pix2pix ({condition} -> image): real (top) vs generated (bottom)", fontsize=9)
    fig.tight_layout()
    from overlapseg.utils.io import atomic_path

    for path, kwargs in ((out_png, {"dpi": 120, "metadata": {"Software": None}}),
                         (out_pdf, {"metadata": {"CreationDate": None, "Creator": None,
                                                 "Producer": None}})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], **kwargs)
    plt.close(fig)


def _label_rgb(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Label image -> RGB, a random bright colour per label, background black."""
    n = int(labels.max(initial=0))
    table = np.concatenate([np.zeros((1, 3)), np.random.default_rng(seed).uniform(0.3, 1.0, (n, 3))])
    return table[labels]


def c2f_stages_figure(examples: Sequence[dict], out_png, out_pdf, category: str,
                      boundary_threshold: float = 0.5, title: str = "coarse-to-fine generator") -> None:
    """The outputs of every stage of a coarse-to-fine generator (``004`` Figs. 1-3), one row
    per example (:meth:`~overlapseg.train.coarse_to_fine.CoarseToFineTrainer.generate` outputs).
    Columns: seed points; stage 1 box image (Eq. 1 ovals) with the boxes taken from its
    connected components; stage 2 input (box-sized coloured ovals); stage 2 output (colour
    mask, boundary class in white); decoded instances after the k-terminal cut; stage 3 input
    (instance rendering: cytoplasm red, nuclei green, boundaries blue); stage 3 image with the
    instance outlines (red) and, when conditioned on cells, the cell outlines (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from overlapseg.utils.io import atomic_path

    titles = ["seed points", "stage 1: ovals + boxes", "stage 2 input: coloured ovals",
              "stage 2: colour mask + boundary", "decoded + k-terminal cut", "stage 3 input",
              "stage 3: image"]
    n = len(examples)
    fig, axes = plt.subplots(n, len(titles), figsize=(2.1 * len(titles), 2.2 * n), squeeze=False)
    for i, out in enumerate(examples):
        mask_image = out["mask_image"]
        colour = np.moveaxis(mask_image[:3], 0, -1).copy()
        colour[mask_image[3] > boundary_threshold] = 1.0
        labels = labels_from_masks(out["masks"]) if len(out["masks"]) else np.zeros(out["image"].shape, np.int32)
        image = np.repeat(out["image"][..., None], 3, axis=2)
        cells = out.get("cells")
        if cells is not None and len(cells):
            image[instance_boundaries(cells, 1)] = (0.2, 0.9, 0.9)
        if len(out["masks"]):
            image[instance_boundaries(out["masks"], 1)] = (1.0, 0.2, 0.2)
        panels = [(out["point_image"][0], "gray"), (out["box_image"][0], "magma"),
                  (np.moveaxis(out["colour_boxes"], 0, -1), None), (colour, None),
                  (_label_rgb(labels, i), None), (np.moveaxis(out["condition"], 0, -1), None),
                  (image, None)]
        for c, (panel, cmap) in enumerate(panels):
            ax = axes[i, c]
            ax.imshow(np.clip(panel, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_wrapped(titles[c], 18), fontsize=7)
        if not len(out["masks"]):  # nothing survived the cut: say so rather than show black tiles
            for c in (4, 5):
                _no_instances(axes[i, c], category)
        for (cy, cx), (h, w) in zip(out["centres"], out["sizes"]):
            axes[i, 1].add_patch(Rectangle((cx - w / 2, cy - h / 2), w, h, fill=False, lw=0.6,
                                           edgecolor="cyan"))
        axes[i, 0].set_ylabel(_wrapped(f"{len(out['points'])} points -> {len(out['centres'])} boxes -> "
                                       f"{len(out['masks'])} {category}", 22), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    for path, kwargs in ((out_png, {"dpi": 120, "metadata": {"Software": None}}),
                         (out_pdf, {"metadata": {"CreationDate": None, "Creator": None,
                                                 "Producer": None}})):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], **kwargs)
    plt.close(fig)

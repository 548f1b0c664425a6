"""Folder of images with matching instance label images (the usual nuclei dataset format).

``X.png`` (or .tif/.tiff/.jpg/.jpeg/.bmp) pairs with ``X_label.png`` / ``X_label.tif`` /
``X_label.tiff``: 0 is background and every other value one instance, so instances
cannot overlap. Options: ``category`` (``nucleus`` by default, or ``cytoplasm``),
``labels`` (folder of the label images relative to ``raw``; default ``raw`` itself).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage as ndi

from overlapseg.data.canonical import CATEGORY_IDS, DataError, Instance, Sample, read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")
LABEL_TAG = "_label"


def read_label_image(path: Path) -> np.ndarray:
    """Integer label image (H, W); TIFF through tifffile, PNG keeping 16-bit values."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            labels = tifffile.imread(path)
        except Exception as exc:
            raise DataError(path, f"unreadable TIFF label image ({exc})") from None
        labels = np.squeeze(labels)
    else:
        labels = read_image(path)
    if labels.ndim != 2:
        raise DataError(path, f"label image must be single-channel (H, W), got shape {labels.shape}")
    if labels.dtype.kind == "f":
        if not np.all(np.mod(labels, 1) == 0):
            raise DataError(path, "label image has non-integer values")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "biu":
        raise DataError(path, f"unsupported label dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataError(path, "label image has negative values")
    return labels


def label_instance_crops(labels: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(bool crop, (row, col) offset) per non-zero label value, in increasing value order;
    memory per instance box, not per image."""
    values, compact = np.unique(labels, return_inverse=True)  # ids may be sparse/large
    compact = compact.reshape(labels.shape) + (0 if values[0] == 0 else 1)
    return [(compact[sl] == value, (sl[0].start, sl[1].start))
            for value, sl in enumerate(ndi.find_objects(compact), start=1) if sl is not None]


def label_instances(labels: np.ndarray) -> list[np.ndarray]:
    """One full-frame bool mask per non-zero label value, in increasing value order."""
    masks = []
    for crop, (y0, x0) in label_instance_crops(labels):
        mask = np.zeros(labels.shape, dtype=bool)
        mask[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
        masks.append(mask)
    return masks


def pair_files(raw: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label image) pairs by stem; a file without its partner raises a DataError."""
    labels = {}
    for p in sorted(label_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES and p.stem.endswith(LABEL_TAG):
            stem = p.stem[: -len(LABEL_TAG)]
            if stem in labels:
                raise DataError(p, f"second label image for {stem!r} (also {labels[stem].name})")
            labels[stem] = p
    images = {}
    for p in sorted(raw.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith(LABEL_TAG):
            if p.stem in images:
                raise DataError(p, f"second image named {p.stem!r} (also {images[p.stem].name})")
            images[p.stem] = p
    if not images and not labels:
        raise DataError(raw, "no images and no *_label images found")
    for stem in sorted(set(images) - set(labels)):
        raise DataError(label_dir / f"{stem}{LABEL_TAG}.png",
                        f"label image missing for {images[stem].name} (expected "
                        f"{stem}{LABEL_TAG}.png or .tif)")
    for stem in sorted(set(labels) - set(images)):
        raise DataError(raw / f"{stem}.png", f"image missing for label image {labels[stem].name}")
    return [(images[s], labels[s]) for s in sorted(images)]


def annotated_categories(category: str = "nucleus", **_options) -> tuple[str, ...]:
    """A label image annotates one category (option ``category``)."""
    return (category,)


def read(raw: Path, category: str = "nucleus", labels: str | None = None) -> Iterator[Sample]:
    """One Sample per image, one instance per label value."""
    raw = Path(raw)
    if category not in CATEGORY_IDS:
        raise DataError(raw, f"option category must be one of {', '.join(CATEGORY_IDS)}, "
                             f"got {category!r}")
    if not raw.is_dir():
        raise DataError(raw, "expected a folder of images and *_label images")
    label_dir = raw / labels if labels else raw
    if not label_dir.is_dir():
        raise DataError(label_dir, "label folder not found")
    for image_path, label_path in pair_files(raw, label_dir):
        image = read_image(image_path)
        label = read_label_image(label_path)
        if label.shape != image.shape[:2]:
            raise DataError(label_path, f"mask size {label.shape} does not match image size "
                                        f"{image.shape[:2]} of {image_path.name}")
        instances = [Instance.from_crop(crop, offset, label.shape, category)
                     for crop, offset in label_instance_crops(label)]
        yield Sample(name=image_path.stem, image=image, instances=instances,
                     source=image_path.name, subset="")

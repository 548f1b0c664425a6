"""The canonical dataset every stage after ingestion reads.

Layout (``DIR`` = ``results/{dataset}/data`` in the workflow)::

    DIR/images/{name}.png     original bit depth; grayscale (H, W) or RGB (H, W, 3)
    DIR/annotations.json      COCO instances; categories cytoplasm (1) and nucleus (2)

Each annotation is one *amodal* instance mask stored as COCO RLE, so instances of one
image may overlap. Extra per-annotation key: ``parent_id`` (annotation id of the cell
a nucleus belongs to, or ``null``). Each COCO image carries ``name`` (the file stem,
used in splits) besides the integer ``id`` that COCO tools need.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.utils.io import atomic_dir, read_json, write_json

CATEGORIES: list[dict] = [
    {"id": 1, "name": "cytoplasm", "supercategory": "cell"},
    {"id": 2, "name": "nucleus", "supercategory": "cell"},
]
CATEGORY_IDS: dict[str, int] = {c["name"]: c["id"] for c in CATEGORIES}
CATEGORY_NAMES: dict[int, str] = {c["id"]: c["name"] for c in CATEGORIES}


class DataError(ValueError):
    """Bad input data; the message always names the offending file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Instance:
    """One amodal instance. ``parent`` indexes the owning cell in the same sample."""

    mask: np.ndarray  # bool (H, W)
    category: str
    parent: int | None = None


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W) or (H, W, 3), uint8 or uint16
    instances: list[Instance] = field(default_factory=list)
    source: str = ""  # where it came from, for audit (file + index)
    subset: str = ""  # the raw data's own subset (e.g. ISBI "train"/"test"), used by split presets


# ----------------------------------------------------------------------------- masks
def encode_mask(mask: np.ndarray) -> dict:
    """Binary mask -> COCO RLE with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """COCO segmentation (RLE, uncompressed RLE or polygons) -> bool (H, W)."""
    if isinstance(segmentation, list):  # polygons
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight COCO box [x, y, w, h] of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


# ----------------------------------------------------------------------------- images
def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image keeping bit depth; RGB order for colour. Raises DataError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(path, "unreadable image (not a supported image file or corrupt)")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 1:
            image = image[:, :, 0]
    return image


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: images must be uint8 or uint16, got {image.dtype}")
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), out):
        raise OSError(f"{path}: could not write image")


def validate_sample(sample: Sample, origin: str | os.PathLike) -> None:
    """Check image/mask consistency; errors name ``origin`` (the raw file)."""
    img = sample.image
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise DataError(origin, f"image {sample.name!r} has unsupported shape {img.shape}")
    h, w = img.shape[:2]
    for k, inst in enumerate(sample.instances):
        if inst.category not in CATEGORY_IDS:
            raise DataError(origin, f"image {sample.name!r} instance {k}: unknown category "
                            f"{inst.category!r} (known: {', '.join(CATEGORY_IDS)})")
        if inst.mask.shape != (h, w):
            raise DataError(origin, f"image {sample.name!r} instance {k}: mask size "
                            f"{inst.mask.shape} does not match image size {(h, w)}")
        if not inst.mask.any():
            raise DataError(origin, f"image {sample.name!r} instance {k}: empty mask")
        if inst.parent is not None and not 0 <= inst.parent < len(sample.instances):
            raise DataError(origin, f"image {sample.name!r} instance {k}: parent index "
                            f"{inst.parent} out of range")


# ----------------------------------------------------------------------------- writing
def write_canonical_dataset(samples: Iterable[Sample], out_dir: str | os.PathLike,
                            info: dict | None = None) -> Path:
    """Write samples as a canonical dataset, atomically (the directory appears whole or not at all)."""
    out_dir = Path(out_dir)
    images, annotations = [], []
    seen: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        for sample in samples:
            origin = sample.source or sample.name
            if sample.name in seen:
                raise DataError(origin, f"duplicate image id {sample.name!r}")
            if not sample.name or "/" in sample.name:
                raise DataError(origin, f"invalid image id {sample.name!r}")
            seen.add(sample.name)
            validate_sample(sample, origin)
            image_id = len(images) + 1
            h, w = sample.image.shape[:2]
            write_image(tmp / "images" / f"{sample.name}.png", sample.image)
            images.append({"id": image_id, "name": sample.name, "file_name": f"{sample.name}.png",
                           "height": h, "width": w, "source": sample.source,
                           "subset": sample.subset})
            first_ann = len(annotations) + 1
            for inst in sample.instances:
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[inst.category],
                    "segmentation": encode_mask(inst.mask),
                    "area": float(inst.mask.sum()),
                    "bbox": mask_bbox(inst.mask),
                    "iscrowd": 0,
                    "parent_id": None if inst.parent is None else first_ann + inst.parent,
                })
        if not images:
            raise DataError(out_dir, "no images to write")
        write_json(tmp / "annotations.json", {
            "info": info or {}, "images": images, "annotations": annotations,
            "categories": CATEGORIES,
        })
    return out_dir


# ----------------------------------------------------------------------------- reading
class CanonicalDataset:
    """Read access to a canonical dataset directory."""

    def __init__(self, root: str | os.PathLike, annotations: str | os.PathLike | None = None):
        self.root = Path(root)
        self.annotation_file = Path(annotations) if annotations else self.root / "annotations.json"
        data = read_json(self.annotation_file)
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(self.annotation_file, f"missing COCO key {key!r}")
        self.data = data
        self.images = {img["name"]: img for img in data["images"]}
        self._by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
        for ann in data["annotations"]:
            self._by_image.setdefault(ann["image_id"], []).append(ann)

    @property
    def names(self) -> list[str]:
        return [img["name"] for img in self.data["images"]]

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, name: str) -> Path:
        return self.root / "images" / self.images[name]["file_name"]

    def load_image(self, name: str) -> np.ndarray:
        return read_image(self.image_path(name))

    def annotations(self, name: str, category: str | None = None) -> list[dict]:
        anns = self._by_image[self.images[name]["id"]]
        if category is not None:
            anns = [a for a in anns if a["category_id"] == CATEGORY_IDS[category]]
        return anns

    def masks(self, name: str, category: str | None = None) -> np.ndarray:
        """Stacked bool masks (N, H, W) of one image, optionally one category."""
        img = self.images[name]
        anns = self.annotations(name, category)
        out = np.zeros((len(anns), img["height"], img["width"]), dtype=bool)
        for k, ann in enumerate(anns):
            out[k] = decode_segmentation(ann["segmentation"], img["height"], img["width"])
        return out

    def sample(self, name: str) -> Sample:
        anns = self.annotations(name)
        index = {a["id"]: k for k, a in enumerate(anns)}
        masks = self.masks(name)
        instances = [Instance(m, CATEGORY_NAMES[a["category_id"]], index.get(a.get("parent_id")))
                     for m, a in zip(masks, anns)]
        return Sample(name, self.load_image(name), instances, source=str(self.image_path(name)),
                      subset=self.images[name].get("subset", ""))

    def __iter__(self) -> Iterator[Sample]:
        for name in self.names:
            yield self.sample(name)

    @cached_property
    def cells_per_image(self) -> dict[str, int]:
        return {n: len(self.annotations(n, "cytoplasm")) for n in self.names}


def subset_coco(coco: dict, names: Sequence[str]) -> dict:
    """COCO dict restricted to the images named (ids unchanged, so predictions still match)."""
    keep = set(names)
    images = [img for img in coco["images"] if img["name"] in keep]
    missing = keep - {img["name"] for img in images}
    if missing:
        raise KeyError(f"images not in dataset: {sorted(missing)[:5]}")
    ids = {img["id"] for img in images}
    return {**coco, "images": images,
            "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}

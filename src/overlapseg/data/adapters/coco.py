"""COCO instances JSON + images folder (polygon, RLE or uncompressed-RLE segmentations).

``raw`` is the JSON file itself or a folder holding exactly one ``*.json`` (or name it
with option ``annotations``). Images are looked up under option ``images`` (relative to
the JSON's folder), else ``images/`` when it exists, else the JSON's folder; a
``file_name`` that is not found there is retried by its base name.

Options: ``categories`` maps the file's category names to ``cytoplasm`` / ``nucleus``
(or to null to drop that category; default identity, unknown names fail listing them),
``skip_empty`` drops annotations with empty masks instead of failing. ``parent_id``
(this project's own extension) is kept when present, so canonical datasets round-trip;
``iscrowd`` regions are not instances and are skipped. A ``parent_id`` pointing to an
annotation left out (crowd, category mapped to null, empty mask with ``skip_empty``) is
cleared, the nucleus kept without parent. Every segmentation is checked before pycocotools
decodes it (polygons need >= 3 points; RLE ``size`` must be the image's and its runs must
add up to height x width), and masks are kept cropped to their boxes while reading.
"""
from __future__ import annotations

import fnmatch
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterator

from overlapseg.data.canonical import (CATEGORY_IDS, DataError, Instance, Sample, decode_crop,
                                       read_image)
from overlapseg.utils.io import read_json

log = logging.getLogger(__name__)


def find_json(raw: Path, annotations: str | None) -> Path:
    """The annotation file: ``raw`` itself, ``raw/annotations``, or the single ``*.json`` in ``raw``."""
    raw = Path(raw)
    if raw.is_file():
        return raw
    if annotations:
        path = raw / annotations
        if not path.is_file():
            raise DataError(path, "annotation file not found")
        return path
    # listdir, not glob: glob answers an unreadable folder with no match, which read as
    # "no *.json" although the file is there; listdir raises "Permission denied" naming it
    found = sorted(raw / n for n in os.listdir(raw) if fnmatch.fnmatch(n, "*.json")) if raw.is_dir() else []
    if not found:
        raise DataError(raw, "no *.json annotation file in this folder")
    if len(found) > 1:
        raise DataError(raw, f"several *.json files ({', '.join(p.name for p in found)}); "
                             "choose one with option annotations")
    return found[0]


def category_mapping(names: set[str], mapping: dict | None, origin: Path) -> dict[str, str | None]:
    """Their category name -> canonical name (None = drop); unknown names raise a DataError."""
    mapping = dict(mapping or {})
    out, unknown = {}, []
    for name in sorted(names):
        target = mapping.get(name, name)
        if target is not None and target not in CATEGORY_IDS:
            unknown.append(name if name not in mapping else f"{name} -> {target}")
        out[name] = target
    if unknown:
        raise DataError(origin, f"unknown category name(s) {', '.join(map(repr, unknown))}; map "
                                f"them with option categories: {{name: cytoplasm|nucleus}} "
                                f"(known: {', '.join(CATEGORY_IDS)})")
    return out


def resolve_image(images_dir: Path, file_name: str, origin: Path) -> Path:
    for candidate in (images_dir / file_name, images_dir / Path(file_name).name):
        if candidate.is_file():
            return candidate
    raise DataError(images_dir / file_name, f"image referenced by {origin.name} not found")


def _unique(values, what: str, origin: Path) -> None:
    dup = [v for v, c in Counter(values).items() if c > 1]
    if dup:
        raise DataError(origin, f"duplicate {what} id(s): {', '.join(map(str, sorted(dup)[:5]))}")


def read(raw: Path, annotations: str | None = None, images: str | None = None,
         categories: dict | None = None, skip_empty: bool = False) -> Iterator[Sample]:
    """One Sample per COCO image, instances in annotation order."""
    json_path = find_json(Path(raw), annotations)
    coco = read_json(json_path)
    if not isinstance(coco, dict):
        raise DataError(json_path, "not a COCO instances file (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(json_path, f"missing COCO key {key!r}")
    root = json_path.parent
    images_dir = root / images if images else (root / "images" if (root / "images").is_dir() else root)
    if not images_dir.is_dir():
        raise DataError(images_dir, "images folder not found")

    _unique([im["id"] for im in coco["images"]], "image", json_path)
    _unique([a["id"] for a in coco["annotations"]], "annotation", json_path)
    _unique([c["id"] for c in coco["categories"]], "category", json_path)
    cat_names = {c["id"]: c["name"] for c in coco["categories"]}
    used = {a["category_id"] for a in coco["annotations"]}
    if used - set(cat_names):
        raise DataError(json_path, f"annotations use undeclared category id(s) "
                                   f"{sorted(used - set(cat_names))}")
    mapping = category_mapping({cat_names[c] for c in used}, categories, json_path)
    by_image: dict = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("image_id") not in by_image:
            raise DataError(json_path, f"annotation {ann['id']} refers to unknown image id "
                                       f"{ann.get('image_id')!r}")
        by_image[ann["image_id"]].append(ann)

    names = [im.get("name") or Path(im["file_name"]).stem for im in coco["images"]]
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise DataError(json_path, f"duplicate image name(s) {', '.join(dup[:5])}")
    crowd = cleared = 0
    for im, name in zip(coco["images"], names):
        path = resolve_image(images_dir, im["file_name"], json_path)
        image = read_image(path)
        h, w = image.shape[:2]
        if (im.get("height", h), im.get("width", w)) != (h, w):
            raise DataError(path, f"image size {(h, w)} does not match {json_path.name} "
                                  f"(height {im.get('height')}, width {im.get('width')})")
        instances: list[Instance] = []
        index: dict = {}  # annotation id -> instance index
        parents: list = []
        dropped: set = set()  # annotations left out on purpose; children lose the link
        for ann in by_image[im["id"]]:
            if ann.get("iscrowd", 0):
                crowd += 1
                dropped.add(ann["id"])
                continue
            category = mapping[cat_names[ann["category_id"]]]
            if category is None:
                dropped.add(ann["id"])
                continue
            where = f"annotation {ann['id']} (image {path.name})"
            if "segmentation" not in ann:
                raise DataError(json_path, f"{where}: missing 'segmentation'")
            try:
                crop, offset = decode_crop(ann["segmentation"], h, w)
            except ValueError as exc:
                raise DataError(json_path, f"{where}: {exc}") from None
            if not crop.any():
                if skip_empty:
                    log.warning("%s: annotation %s has an empty mask; dropped", json_path, ann["id"])
                    dropped.add(ann["id"])
                    continue
                raise DataError(json_path, f"{where}: empty mask (set option skip_empty: true "
                                           "to drop it)")
            index[ann["id"]] = len(instances)
            instances.append(Instance.from_crop(crop, offset, (h, w), category))
            parents.append(ann.get("parent_id"))
        for inst, parent_id in zip(instances, parents):
            if parent_id is None:
                continue
            if parent_id in dropped:
                cleared += 1
                continue
            if parent_id not in index:
                raise DataError(json_path, f"parent_id {parent_id} is not an instance of image "
                                           f"{im['id']} ({path.name})")
            inst.parent = index[parent_id]
        yield Sample(name=name, image=image, instances=instances,
                     source=f"{json_path.name}[{im['id']}]", subset=im.get("subset", ""))
    if crowd:
        log.info("%s: skipped %d iscrowd region(s)", json_path, crowd)
    if cleared:
        log.info("%s: %d parent link(s) to left-out annotations cleared", json_path, cleared)

"""The canonical dataset every stage after ingestion reads.

Layout (``DIR`` = ``results/{dataset}/data`` in the workflow)::

    DIR/images/{name}.png     original bit depth; grayscale (H, W) or RGB (H, W, 3)
    DIR/annotations.json      COCO instances; categories cytoplasm (1) and nucleus (2)

``info.annotated`` (written only when a dataset annotates fewer than all categories, e.g. the
nuclei-only sets of the coarse-to-fine generator) lists the categories it annotates: elsewhere
in its images a cell of an unlisted category may be present but unannotated, so models learn
nothing about that category from these images (:attr:`CanonicalDataset.annotated`).

Each annotation is one *amodal* instance mask stored as COCO RLE, so instances of one
image may overlap. Extra per-annotation key: ``parent_id`` (annotation id of the cell
a nucleus belongs to, or ``null``). Each COCO image carries ``name`` (the file stem,
used in splits) besides the integer ``id`` that COCO tools need.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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


class Instance:
    """One amodal instance. ``parent`` indexes the owning cell in the same sample.

    The mask is kept cropped to its bounding box (``crop`` at ``offset`` = (row, col) in an
    image of ``shape``), so a large image with many instances costs memory per instance box,
    not per image. ``mask`` gives the full-frame bool (H, W) mask, built on each access.
    ``Instance(mask, category, parent)`` takes a full-frame mask; ``Instance.from_crop`` a crop.
    """

    __slots__ = ("crop", "offset", "shape", "category", "parent")

    def __init__(self, mask: np.ndarray, category: str, parent: int | None = None):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"instance mask must be 2-D (H, W), got shape {mask.shape}")
        self.crop, self.offset = crop_to_box(mask)
        self.shape = tuple(int(v) for v in mask.shape)
        self.category = category
        self.parent = parent

    @classmethod
    def from_crop(cls, crop: np.ndarray, offset: tuple[int, int], shape: tuple[int, int],
                  category: str, parent: int | None = None) -> "Instance":
        """Instance from a mask ``crop`` whose pixel (0, 0) lies at ``offset`` in an image of
        ``shape``; the crop is tightened to its foreground."""
        crop = np.asarray(crop, dtype=bool)
        y0, x0 = (int(v) for v in offset)
        h, w = (int(v) for v in shape)
        if crop.ndim != 2 or y0 < 0 or x0 < 0 or y0 + crop.shape[0] > h or x0 + crop.shape[1] > w:
            raise ValueError(f"mask crop {crop.shape} at {(y0, x0)} does not fit image size {(h, w)}")
        inst = cls.__new__(cls)
        tight, (dy, dx) = crop_to_box(crop)
        inst.crop, inst.offset = tight, ((y0 + dy, x0 + dx) if tight.size else (0, 0))
        inst.shape = (h, w)
        inst.category, inst.parent = category, parent
        return inst

    @property
    def box(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the crop in the full image."""
        (y0, x0), (ch, cw) = self.offset, self.crop.shape
        return slice(y0, y0 + ch), slice(x0, x0 + cw)

    @property
    def mask(self) -> np.ndarray:
        full = np.zeros(self.shape, dtype=bool)
        full[self.box] = self.crop
        return full

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    def __repr__(self) -> str:
        return (f"Instance({self.category!r}, parent={self.parent}, box={list(mask_bbox_of(self))}, "
                f"shape={self.shape})")


@dataclass
class Sample:
    name: str
    image: np.ndarray  # (H, W) or (H, W, 3), uint8 or uint16
    instances: list[Instance] = field(default_factory=list)
    source: str = ""  # where it came from, for audit (file + index)
    subset: str = ""  # the raw data's own subset (e.g. ISBI "train"/"test"), used by split presets


# ----------------------------------------------------------------------------- masks
def crop_to_box(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(tight crop, (row, col) offset) of a 2-D bool mask; an empty mask gives a (0, 0) crop."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return np.zeros((0, 0), dtype=bool), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=bool), (y0, x0)


def mask_bbox_of(inst: Instance) -> list[float]:
    """Tight COCO box [x, y, w, h] of an instance (zeros for an empty one)."""
    (y0, x0), (ch, cw) = inst.offset, inst.crop.shape
    return [float(x0), float(y0), float(cw), float(ch)]


def encode_mask(mask: np.ndarray) -> dict:
    """Binary mask -> COCO RLE with ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_crop(crop: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]) -> dict:
    """Full-frame COCO RLE (str counts, identical to ``encode_mask`` of the full mask) of a
    mask crop at ``offset`` in an image of ``shape``, without building the full mask."""
    h, w = (int(v) for v in shape)
    y0, x0 = (int(v) for v in offset)
    ch, cw = crop.shape
    # the column strip holding the crop, in the column-major order of COCO RLE
    strip = np.zeros((cw, h), dtype=bool)
    strip[:, y0:y0 + ch] = np.asarray(crop, dtype=bool).T
    flat = strip.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).astype(np.int64)
    if flat.size and flat[0]:
        runs = np.concatenate([[0], runs])
    if not runs.size:
        runs = np.zeros(1, dtype=np.int64)
    runs[0] += x0 * h
    after = (w - x0 - cw) * h
    if after:
        if len(runs) % 2:  # ends in a background run: extend it
            runs[-1] += after
        else:
            runs = np.concatenate([runs, [after]])
    rle = mask_utils.frPyObjects({"counts": runs.tolist(), "size": [h, w]}, h, w)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_runs(counts: str | bytes) -> np.ndarray:
    """Run lengths (int64) of a compressed COCO RLE string, as pycocotools' ``rleFrString``
    decodes them; ValueError for a malformed string."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("RLE counts string has non-ASCII characters") from None
    c = np.frombuffer(bytes(counts), dtype=np.uint8).astype(np.int64) - 48
    if not c.size:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("RLE counts string has characters outside '0'..'o'")
    last = (c & 0x20) == 0  # a character without the continuation bit ends a number
    if not last[-1]:
        raise ValueError("RLE counts string ends in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ValueError("RLE counts string holds a number too large for a run length")
    pos = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] |= np.left_shift(np.int64(-1), 5 * lengths[negative])
    runs = x.copy()  # from the 4th number on, each is a difference to the one two before
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def _check_runs(runs: np.ndarray, height: int, width: int) -> None:
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE has a negative run length ({int(runs.min())})")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"RLE run lengths sum to {total} pixels, expected {height * width} "
                         f"(= {height} x {width}); corrupt or truncated RLE")


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
    """Checked COCO segmentation (polygons, RLE or uncompressed RLE) -> RLE with bytes counts.

    Everything pycocotools would misread is rejected with a ValueError saying what is wrong:
    polygons with fewer than 3 points or non-numeric coordinates, an RLE whose ``size`` is
    not (height, width), negative runs, or runs that do not add up to height x width pixels
    (pycocotools would decode uninitialised memory and loop forever merging such masks).
    """
    if isinstance(segmentation, list):  # polygons
        if not segmentation:
            raise ValueError("segmentation is an empty list of polygons")
        for k, poly in enumerate(segmentation):
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                raise ValueError(f"polygon {k} must be a flat list of numbers [x1, y1, x2, y2, ...]")
            if not all(math.isfinite(v) for v in poly):
                raise ValueError(f"polygon {k} has non-finite coordinates")
            if len(poly) % 2:
                raise ValueError(f"polygon {k} has an odd number of coordinates ({len(poly)})")
            if len(poly) < 6:
                raise ValueError(f"polygon with {len(poly) // 2} point(s) (needs >= 3)")
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        raise ValueError("segmentation must be a list of polygons or an RLE dict with 'size' and 'counts'")
    size = segmentation["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_number(v) for v in size)
            or [int(v) for v in size] != [height, width]):
        raise ValueError(f"RLE size {size!r} does not match image size {[height, width]}")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise ValueError("uncompressed RLE counts must be integers")
        _check_runs(np.asarray(counts, dtype=np.int64), height, width)
        return mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    if not isinstance(counts, (str, bytes)):
        raise ValueError(f"RLE counts must be a string or a list of integers, got {type(counts).__name__}")
    _check_runs(rle_runs(counts), height, width)
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """COCO segmentation (RLE, uncompressed RLE or polygons) -> bool (H, W); ValueError if bad."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width)).astype(bool)


def decode_crop(segmentation, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """COCO segmentation -> (bool crop of its bounding box, (row, col) offset), without
    decoding the full frame (checked like ``segmentation_to_rle``)."""
    rle = segmentation_to_rle(segmentation, height, width)
    runs = rle_runs(rle["counts"])
    ends = np.cumsum(runs)
    fg = (np.arange(len(runs)) % 2 == 1) & (runs > 0)
    if not fg.any():
        return np.zeros((0, 0), dtype=bool), (0, 0)
    start, stop = ends[fg] - runs[fg], ends[fg]  # foreground runs, column-major pixel indices
    # split runs that continue into the next column into one segment per column
    first, last = start // height, (stop - 1) // height
    n = last - first + 1
    run = np.repeat(np.arange(len(start)), n)
    col = first[run] + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    r0 = np.where(col == first[run], start[run] % height, 0)
    r1 = np.where(col == last[run], (stop[run] - 1) % height + 1, height)
    y0, y1, x0, x1 = int(r0.min()), int(r1.max()), int(col.min()), int(col.max()) + 1
    edges = np.zeros((x1 - x0, y1 - y0 + 1), dtype=np.int32)
    np.add.at(edges, (col - x0, r0 - y0), 1)
    np.add.at(edges, (col - x0, r1 - y0), -1)
    crop = np.ascontiguousarray((np.cumsum(edges[:, :-1], axis=1) > 0).T)
    return crop, (y0, x0)


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Tight COCO box [x, y, w, h] of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


# ----------------------------------------------------------------------------- images
# libjpeg reports damaged data only as warnings on stderr and decodes on (grey rows, shifted
# blocks); these are the warnings that mean the pixel data is not what was saved
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")


@contextlib.contextmanager
def _stderr_lines(out: list[str]) -> Iterator[None]:
    """Capture what C libraries write to file descriptor 2 into ``out`` (lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.extend(tmp.read().decode("utf-8", "replace").splitlines())


def _check_intact(path: Path) -> None:
    """Decode ``path`` fully with Pillow, which fails on truncated or corrupt data where
    OpenCV may decode on. Runs before OpenCV reads the file, so no library message precedes
    the one-line error. Formats Pillow does not know are left to OpenCV alone."""
    from PIL import Image, UnidentifiedImageError

    lines: list[str] = []
    try:
        with warnings.catch_warnings(), _stderr_lines(lines):
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the error line says it
            with Image.open(path) as im:
                im.load()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        return
    except (OSError, SyntaxError, ValueError) as exc:
        detail = f"; {lines[0].strip()}" if lines else ""  # e.g. libtiff's own reason
        raise DataError(path, f"truncated or corrupt image ({exc}{detail})") from None
    if lines:  # warnings about a file that decoded: not ours to swallow
        print("\n".join(lines), file=sys.stderr)


def _imread(path: Path, check: bool) -> np.ndarray | None:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the DataError says it
    try:
        if not check:
            return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        with open(path, "rb") as f:
            jpeg = f.read(3) == b"\xff\xd8\xff"
        if not jpeg:
            _check_intact(path)
            return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        lines: list[str] = []
        with _stderr_lines(lines):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        damage = [ln for ln in lines if ln.startswith(JPEG_DAMAGE)]
        other = [ln for ln in lines if not ln.startswith(JPEG_DAMAGE)]
        if other:  # not ours to swallow
            print("\n".join(other), file=sys.stderr)
        if damage:
            raise DataError(path, f"truncated or corrupt image ({damage[0]})")
        return image
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_image(path: str | os.PathLike, check: bool = True) -> np.ndarray:
    """Read an image keeping bit depth; RGB order for colour. Raises DataError if unreadable,
    truncated or corrupt: JPEG through libjpeg's damage warnings, other formats through a
    strict second decoding by Pillow (``check=False`` skips both, for the PNGs this package
    wrote itself)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    image = _imread(path, check)
    if image is None:
        raise DataError(path, "unreadable image (not a supported image file, truncated or corrupt)")
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
        if tuple(inst.shape) != (h, w):
            raise DataError(origin, f"image {sample.name!r} instance {k}: mask size "
                            f"{tuple(inst.shape)} does not match image size {(h, w)}")
        if not inst.crop.any():
            raise DataError(origin, f"image {sample.name!r} instance {k}: empty mask")
        if inst.parent is not None and not 0 <= inst.parent < len(sample.instances):
            raise DataError(origin, f"image {sample.name!r} instance {k}: parent index "
                            f"{inst.parent} out of range")


# ----------------------------------------------------------------------------- writing
def check_annotated(annotated: Iterable[str], where: str | os.PathLike) -> tuple[str, ...]:
    """Category names a dataset annotates, in the order of ``CATEGORIES``; a DataError names
    ``where`` for an unknown or empty list."""
    if isinstance(annotated, str) or not isinstance(annotated, (list, tuple, set, frozenset)):
        raise DataError(where, f"annotated categories must be a list of names, got {annotated!r}")
    unknown = sorted(set(annotated) - set(CATEGORY_IDS))
    if unknown or not annotated:
        raise DataError(where, f"annotated categories {sorted(annotated)} must be a non-empty "
                               f"subset of {', '.join(CATEGORY_IDS)}")
    return tuple(c for c in CATEGORY_IDS if c in set(annotated))


def write_canonical_dataset(samples: Iterable[Sample], out_dir: str | os.PathLike,
                            info: dict | None = None,
                            annotated: Iterable[str] | None = None) -> Path:
    """Write samples as a canonical dataset, atomically (the directory appears whole or not at all).

    ``annotated``: the categories the data annotates when not all of them (stored as
    ``info.annotated``); an instance of another category is an error.
    """
    out_dir = Path(out_dir)
    scope = check_annotated(annotated, out_dir) if annotated is not None else tuple(CATEGORY_IDS)
    info = dict(info or {})
    if scope != tuple(CATEGORY_IDS):
        info["annotated"] = list(scope)
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
            outside = sorted({i.category for i in sample.instances} - set(scope))
            if outside:
                raise DataError(origin, f"image {sample.name!r} has {', '.join(outside)} instances, "
                                        f"but the dataset annotates only {', '.join(scope)}")
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
                    "segmentation": encode_crop(inst.crop, inst.offset, inst.shape),
                    "area": float(inst.area),
                    "bbox": mask_bbox_of(inst),
                    "iscrowd": 0,
                    "parent_id": None if inst.parent is None else first_ann + inst.parent,
                })
        if not images:
            raise DataError(out_dir, "no images to write")
        write_json(tmp / "annotations.json", {
            "info": info, "images": images, "annotations": annotations,
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

    @cached_property
    def annotated(self) -> tuple[str, ...]:
        """Categories this dataset annotates (``info.annotated``; all when absent). Sets written by
        a layout generator before the key existed name their one category as ``info.category``."""
        info = self.data.get("info") or {}
        if "annotated" in info:
            return check_annotated(info["annotated"], f"{self.annotation_file} info.annotated")
        if info.get("trainer") and info.get("category") in CATEGORY_IDS:
            return (info["category"],)
        return tuple(CATEGORY_IDS)

    @property
    def scale(self) -> float:
        """Resampling factor to the study's reference pixel size (``datasets.<name>.scale``,
        recorded at ingestion; 1.0 = native, 0.5 = twice the reference resolution)."""
        return float((self.data.get("info") or {}).get("scale", 1.0))

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, name: str) -> Path:
        return self.root / "images" / self.images[name]["file_name"]

    def load_image(self, name: str) -> np.ndarray:
        return read_image(self.image_path(name), check=False)  # PNGs written by this package

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
            out[k] = self._decode(ann, img, crop=False)
        return out

    def instances(self, name: str, category: str | None = None) -> list[Instance]:
        """Instances of one image (optionally one category) with box-cropped masks: the
        memory-light alternative to ``masks`` for large images. ``parent`` indexes the
        returned list (None when the parent is not in it)."""
        img = self.images[name]
        anns = self.annotations(name, category)
        index = {a["id"]: k for k, a in enumerate(anns)}
        out = []
        for ann in anns:
            crop, offset = self._decode(ann, img, crop=True)
            out.append(Instance.from_crop(crop, offset, (img["height"], img["width"]),
                                          CATEGORY_NAMES[ann["category_id"]],
                                          index.get(ann.get("parent_id"))))
        return out

    def _decode(self, ann: dict, img: dict, crop: bool):
        try:
            if crop:
                return decode_crop(ann["segmentation"], img["height"], img["width"])
            return decode_segmentation(ann["segmentation"], img["height"], img["width"])
        except (KeyError, ValueError) as exc:
            raise DataError(self.annotation_file, f"annotation {ann.get('id')} (image "
                                                  f"{img['name']!r}): {exc}") from None

    def sample(self, name: str) -> Sample:
        return Sample(name, self.load_image(name), self.instances(name),
                      source=str(self.image_path(name)), subset=self.images[name].get("subset", ""))

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

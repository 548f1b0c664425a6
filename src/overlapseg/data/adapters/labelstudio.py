"""Label Studio JSON export (the tool the brightfield thesis annotated its cells with).

An export is a list of tasks; ``data.image`` names the image and ``annotations[].result[]``
holds regions: ``polygonlabels`` (``points`` in percent of ``original_width`` /
``original_height``) and ``brushlabels`` (``rle``: Label Studio's bit-packed RLE of the
RGBA brush layer, decoded by :func:`decode_brush_rle`). ``relation`` results that connect
a nucleus with a cell set its parent; otherwise a nucleus is linked to the cell covering
most of it (option ``link_nuclei``, default true).

Images are found relative to the JSON's folder (or option ``images``) by base name; Label
Studio prefixes uploads with an 8-hex-digit id (``1a2b3c4d-cell.png``), so the name without
it is tried too. Of several annotations of a task the last non-cancelled one is used.
Options: ``annotations`` (JSON name when the folder holds several), ``images``,
``categories`` (label -> cytoplasm|nucleus|null, as for coco), ``skip_empty``,
``link_nuclei``.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

import numpy as np
from pycocotools import mask as mask_utils

from overlapseg.data.adapters.coco import category_mapping, find_json
from overlapseg.data.adapters.isbi2014 import link_nuclei as link_nuclei_to_cells
from overlapseg.data.canonical import DataError, Instance, Sample, read_image
from overlapseg.utils.io import read_json

log = logging.getLogger(__name__)

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-", re.IGNORECASE)
REGION_TYPES = {"polygonlabels": "polygonlabels", "brushlabels": "brushlabels"}


# ----------------------------------------------------------------------------- brush RLE
class _Bits:
    """Big-endian bit reader over a byte sequence (MSB of byte 0 first)."""

    def __init__(self, data: Sequence[int]):
        self.bits = np.unpackbits(np.asarray(data, dtype=np.uint8))
        self.pos = 0

    def read(self, n: int) -> int:
        chunk = self.bits[self.pos:self.pos + n]
        if len(chunk) < n:
            raise ValueError("brush RLE ends early")
        self.pos += n
        return int(chunk.dot(1 << np.arange(n - 1, -1, -1, dtype=np.int64)))

    def read_words(self, count: int, size: int) -> np.ndarray:
        chunk = self.bits[self.pos:self.pos + count * size]
        if len(chunk) < count * size:
            raise ValueError("brush RLE ends early")
        self.pos += count * size
        return chunk.reshape(count, size).astype(np.int64) @ (1 << np.arange(size - 1, -1, -1))


def decode_brush_rle(rle: Sequence[int]) -> np.ndarray:
    """Label Studio brush RLE -> flat uint8 array (RGBA values of the brush layer, row-major).

    Bit layout (the thi.ng ``rle-pack`` scheme Label Studio uses): a 32-bit value count,
    a 5-bit word size minus one, four 4-bit run-length field sizes minus one; then runs,
    each a flag bit (1 = one word repeated, 0 = literal words), a 2-bit choice of length
    field, the run length minus one in that many bits, and the word(s).
    """
    bits = _Bits(rle)
    num = bits.read(32)
    word = bits.read(5) + 1
    run_bits = [bits.read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < num:
        repeated = bits.read(1)
        length = bits.read(run_bits[bits.read(2)]) + 1
        end = min(i + length, num)
        if repeated:
            out[i:end] = bits.read(word)
        else:
            out[i:end] = bits.read_words(length, word)[: end - i]
        i += length
    return out


def brush_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Brush RLE -> bool (H, W): pixels whose alpha (4th RGBA channel) is non-zero."""
    flat = decode_brush_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(f"brush RLE holds {flat.size} values, expected {height}x{width}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """bool (H, W) -> Label Studio brush RLE (alpha and colour 255 where painted).

    Only repeated-word runs, 8-bit words; valid input for :func:`decode_brush_rle` and for
    Label Studio. Used to build fixtures and to export masks back to Label Studio.
    """
    flat = np.repeat(np.asarray(mask, dtype=bool).ravel().astype(np.uint8) * 255, 4)
    change = np.flatnonzero(np.diff(flat.astype(np.int16))) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    run_field = 16  # every run length field 16 bits; longer runs are split
    bits: list[str] = [f"{flat.size:032b}", f"{7:05b}"] + [f"{run_field - 1:04b}"] * 4
    for start, length in zip(starts, lengths):
        value = int(flat[start])
        while length > 0:
            n = min(length, 1 << run_field)
            bits.append(f"1{0:02b}{n - 1:0{run_field}b}{value:08b}")
            length -= n
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[k:k + 8], 2) for k in range(0, len(stream), 8)]


# ----------------------------------------------------------------------------- tasks
def resolve_image(ref: str, folders: Sequence[Path], json_path: Path) -> Path:
    """``data.image`` (URL, ``/data/upload/..`` path, local path) -> an existing file, by base name."""
    base = Path(unquote(urlparse(ref).path)).name
    names = [base] + ([UPLOAD_PREFIX.sub("", base)] if UPLOAD_PREFIX.match(base) else [])
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise DataError(folders[0] / names[-1], f"image {ref!r} of {json_path.name} not found "
                                            f"(looked for {', '.join(names)} in "
                                            f"{', '.join(str(f) for f in folders)})")


def _choose_annotation(task: dict) -> dict | None:
    anns = [a for a in task.get("annotations") or task.get("completions") or []
            if not a.get("was_cancelled")]
    return anns[-1] if anns else None


def region_mask(result: dict, json_path: Path, where: str) -> np.ndarray:
    """One polygon or brush result -> bool mask at its original size."""
    try:
        width, height = int(result["original_width"]), int(result["original_height"])
        value = result["value"]
        if result["type"] == "polygonlabels":
            pts = np.asarray(value["points"], dtype=float)
            if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] != 2:
                raise ValueError(f"polygon needs >= 3 (x, y) points, got shape {pts.shape}")
            poly = (pts * [width / 100.0, height / 100.0]).ravel().tolist()
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
            return mask_utils.decode(rle).astype(bool)
        return brush_mask(value["rle"], height, width)
    except KeyError as exc:
        raise DataError(json_path, f"{where}: missing key {exc}") from None
    except ValueError as exc:
        raise DataError(json_path, f"{where}: {exc}") from None


def read(raw: Path, annotations: str | None = None, images: str | None = None,
         categories: dict | None = None, skip_empty: bool = False,
         link_nuclei: bool = True) -> Iterator[Sample]:
    """One Sample per annotated task; tasks without a usable annotation are skipped (logged)."""
    json_path = find_json(Path(raw), annotations)
    tasks = read_json(json_path)
    if isinstance(tasks, dict):  # a single-task export
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(json_path, "not a Label Studio JSON export (expected a list of tasks)")
    folders = [json_path.parent / images] if images else [json_path.parent,
                                                          json_path.parent / "images"]
    folders = [f for f in folders if f.is_dir()] or folders

    chosen = []
    labels_used: set[str] = set()
    for t, task in enumerate(tasks):
        ann = _choose_annotation(task)
        if ann is None:
            log.warning("%s: task %s has no annotation; skipped", json_path, task.get("id", t))
            continue
        regions = [r for r in ann.get("result", []) if r.get("type") in REGION_TYPES]
        for r in regions:
            labels_used.update(r.get("value", {}).get(r["type"], []))
        chosen.append((t, task, ann, regions))
    mapping = category_mapping(labels_used, categories, json_path)

    names: Counter = Counter()
    for t, task, ann, regions in chosen:
        tid = task.get("id", t)
        ref = (task.get("data") or {}).get("image")
        if not ref:
            raise DataError(json_path, f"task {tid}: missing data.image")
        path = resolve_image(ref, folders, json_path)
        image = read_image(path)
        h, w = image.shape[:2]
        name = UPLOAD_PREFIX.sub("", path.stem)
        names[name] += 1
        if names[name] > 1:
            raise DataError(json_path, f"task {tid}: duplicate image name {name!r}")
        ids = [r["id"] for r in regions if "id" in r]
        dup = sorted(i for i, c in Counter(ids).items() if c > 1)
        if dup:
            raise DataError(json_path, f"task {tid}: duplicate region id(s) {', '.join(dup)}")
        instances: list[Instance] = []
        index: dict[str, int] = {}
        for r in regions:
            where = f"task {tid} region {r.get('id', '?')}"
            labels = r.get("value", {}).get(r["type"], [])
            targets = {mapping[lab] for lab in labels}
            if len(targets) != 1:
                raise DataError(json_path, f"{where}: needs exactly one label, got {labels}")
            category = targets.pop()
            if category is None:
                continue
            if (int(r.get("original_height", h)), int(r.get("original_width", w))) != (h, w):
                raise DataError(json_path, f"{where}: annotated at size "
                                           f"{(r.get('original_height'), r.get('original_width'))}"
                                           f" but image {path.name} is {(h, w)}")
            mask = region_mask(r, json_path, where)
            if not mask.any():
                if skip_empty:
                    log.warning("%s: %s has an empty mask; dropped", json_path, where)
                    continue
                raise DataError(json_path, f"{where}: empty mask (set option skip_empty: true "
                                           "to drop it)")
            index[r.get("id", f"#{len(instances)}")] = len(instances)
            instances.append(Instance(mask, category))
        linked = False
        for rel in (r for r in ann.get("result", []) if r.get("type") == "relation"):
            a, b = index.get(rel.get("from_id")), index.get(rel.get("to_id"))
            if a is None or b is None:
                continue
            cats = {instances[a].category: a, instances[b].category: b}
            if set(cats) == {"cytoplasm", "nucleus"}:
                instances[cats["nucleus"]].parent = cats["cytoplasm"]
                linked = True
        if link_nuclei and not linked:
            cells = [k for k, inst in enumerate(instances) if inst.category == "cytoplasm"]
            nucs = [k for k, inst in enumerate(instances) if inst.category == "nucleus"]
            parents = link_nuclei_to_cells([instances[k].mask for k in nucs],
                                           [instances[k].mask for k in cells])
            for k, p in zip(nucs, parents):
                instances[k].parent = None if p is None else cells[p]
        yield Sample(name=name, image=image, instances=instances,
                     source=f"{json_path.name}[task {tid}]", subset="")

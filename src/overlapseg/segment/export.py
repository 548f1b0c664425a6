"""Overlapping instances of one image in the formats labs open: COCO JSON, label-image layers
(Fiji, napari), ImageJ ROI sets (Fiji), GeoJSON (QuPath), an overlay PNG and a per-instance
measurement table.

Coordinates: polygons, centroids and boxes use the pixel-corner convention of ImageJ, QuPath
and COCO: x to the right, y down, (0, 0) the top-left corner of the top-left pixel, so pixel
(row r, column c) covers [c, c+1) x [r, r+1). Instance ids are 1..N per image (cells first,
each category by decreasing score) and are the same number in every output: the COCO
annotation id, the label value, the ROI and GeoJSON names and the CSV ``id``.

Label layers: one 16-bit image per category per *layer*. Instances are placed in id order,
each into the first layer of its category where it overlaps no instance already placed
(a new layer when it overlaps one in every layer); 0 is background. Layer 1 of each category
the model predicts is always written, so every image has the same files; the maximum over a
category's layers is not a segmentation, each layer is.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Sequence

import numpy as np

from overlapseg.data.canonical import CATEGORIES, CATEGORY_IDS, CATEGORY_NAMES, decode_crop
from overlapseg.utils.io import atomic_path, write_json

CATEGORY_ORDER = ("cytoplasm", "nucleus")
CATEGORY_COLOURS = {"cytoplasm": (255, 200, 0), "nucleus": (0, 200, 255)}  # ROI/QuPath colours
MAX_LABEL = np.iinfo(np.uint16).max
CSV_FIELDS = ("image", "id", "category", "score", "area", "perimeter", "centroid_x", "centroid_y",
              "bbox_x", "bbox_y", "bbox_width", "bbox_height", "overlap_area", "overlaps_with",
              "cell_id", "nucleus_ids", "nucleus_area", "nc_ratio")
# The zip members' timestamp: fixed, so a rerun writes the same bytes.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass
class FoundInstance:
    """One predicted instance, its mask kept as a tight crop at ``offset`` (row, col)."""

    id: int
    category: str
    score: float
    crop: np.ndarray
    offset: tuple[int, int]
    segmentation: dict  # the predictor's COCO RLE, kept as written
    cell_id: int | None = None  # nuclei: the cell holding most of it (>= half its area)

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @property
    def box(self) -> tuple[slice, slice]:
        (y0, x0), (h, w) = self.offset, self.crop.shape
        return slice(y0, y0 + h), slice(x0, x0 + w)

    def full_mask(self, shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        mask[self.box] = self.crop
        return mask


# ----------------------------------------------------------------------------- instances
def instances_from_results(results: Sequence[dict], shape: tuple[int, int]) -> list[FoundInstance]:
    """COCO results of one image -> instances with ids (cells first, then nuclei, each by
    decreasing score) and each nucleus linked to the cell holding it. Empty masks dropped."""
    h, w = shape
    keyed = []
    for k, r in enumerate(results):
        name = CATEGORY_NAMES.get(int(r["category_id"]))
        if name is None:
            raise ValueError(f"prediction with unknown category id {r['category_id']}")
        crop, offset = decode_crop(r["segmentation"], h, w)
        if crop.any():
            keyed.append((CATEGORY_ORDER.index(name), -float(r.get("score", 1.0)), k, name, crop, offset, r))
    keyed.sort(key=lambda t: t[:3])
    found = [FoundInstance(i + 1, name, float(r.get("score", 1.0)), crop, tuple(int(v) for v in offset),
                           r["segmentation"])
             for i, (_, _, _, name, crop, offset, r) in enumerate(keyed)]
    if len(found) > MAX_LABEL:
        raise ValueError(f"{len(found)} instances exceed the 16-bit label range ({MAX_LABEL})")
    link_nuclei(found)
    return found


def intersection(a: FoundInstance, b: FoundInstance) -> int:
    """Pixels shared by two instances (through their boxes, without full-frame masks)."""
    window = _overlap_window(a, b.offset, b.crop.shape)
    return 0 if window is None else int((b.crop[window[0]] & a.crop[window[1]]).sum())


def _overlap_window(a: FoundInstance, offset: tuple[int, int], shape: tuple[int, ...]):
    """Slices of the overlap of ``a``'s box with a box at ``offset`` of ``shape``: (in that
    box, in ``a``'s crop), or None when they do not meet."""
    (ay, ax), (by, bx) = a.offset, offset
    y0, x0 = max(ay, by), max(ax, bx)
    y1, x1 = min(ay + a.crop.shape[0], by + shape[0]), min(ax + a.crop.shape[1], bx + shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return ((slice(y0 - by, y1 - by), slice(x0 - bx, x1 - bx)),
            (slice(y0 - ay, y1 - ay), slice(x0 - ax, x1 - ax)))


def _paste(target: np.ndarray, offset: tuple[int, int], inst: FoundInstance) -> None:
    """OR ``inst``'s mask into ``target``, a bool array covering the box at ``offset``."""
    window = _overlap_window(inst, offset, target.shape)
    if window is not None:
        target[window[0]] |= inst.crop[window[1]]


def box_neighbours(instances: Sequence[FoundInstance]) -> list[np.ndarray]:
    """For each instance, the indices of the other instances whose boxes intersect its box
    (the only ones it can share pixels with), found for all pairs at once."""
    if not instances:
        return []
    boxes = np.array([(i.offset[0], i.offset[1], i.offset[0] + i.crop.shape[0],
                       i.offset[1] + i.crop.shape[1]) for i in instances])
    y0, x0, y1, x1 = boxes.T
    meet = ((y0[:, None] < y1[None]) & (y0[None] < y1[:, None]) &
            (x0[:, None] < x1[None]) & (x0[None] < x1[:, None]))
    np.fill_diagonal(meet, False)
    return [np.flatnonzero(row) for row in meet]


def link_nuclei(instances: Sequence[FoundInstance]) -> None:
    """Set each nucleus' ``cell_id``: the cell sharing most of its pixels, when that is at
    least half the nucleus (ties: the lower id); None otherwise."""
    for nuc, near in zip(instances, box_neighbours(instances)):
        if nuc.category != "nucleus":
            continue
        best, best_id = 0, None
        for cell in (instances[j] for j in near if instances[j].category == "cytoplasm"):
            shared = intersection(nuc, cell)
            if shared > best:  # neighbours come in id order: ties keep the lower id
                best, best_id = shared, cell.id
        nuc.cell_id = best_id if best_id is not None and 2 * best >= nuc.area else None


# ----------------------------------------------------------------------------- labels
def label_layers(instances: Sequence[FoundInstance], category: str,
                 shape: tuple[int, int]) -> list[np.ndarray]:
    """uint16 label layers of one category (see the module docstring); at least one layer."""
    layers = [np.zeros(shape, dtype=np.uint16)]
    for inst in instances:
        if inst.category != category:
            continue
        for layer in layers:
            if not layer[inst.box][inst.crop].any():
                break
        else:
            layer = np.zeros(shape, dtype=np.uint16)
            layers.append(layer)
        layer[inst.box][inst.crop] = inst.id
    return layers


def write_tiff(path: Path, image: np.ndarray) -> None:
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, image, photometric="minisblack", compression="zlib")


# ----------------------------------------------------------------------------- polygons
def instance_geometry(inst: FoundInstance):
    """The instance's outline as a shapely (Multi)Polygon in pixel-corner coordinates.

    Contours from ``skimage.measure.find_contours`` at level 0.5 run through the middle of the
    edges between inside and outside pixels (pixel-exact on straight runs, corners cut); the
    rings are combined by symmetric difference, so holes stay holes; collinear vertices are
    dropped. Pixels touching only diagonally are separate parts.
    """
    import shapely
    from shapely.geometry import Polygon
    from skimage import measure

    (y0, x0) = inst.offset
    rings = []
    for c in measure.find_contours(np.pad(inst.crop, 1).astype(np.uint8), 0.5):
        # padded index -> image index (-1), pixel centre -> pixel corner convention (+0.5)
        xy = np.column_stack([c[:, 1] + (x0 - 0.5), c[:, 0] + (y0 - 0.5)])
        if len(xy) >= 4:
            rings.append(Polygon(xy))
    if not rings:
        return Polygon()
    geom = reduce(shapely.symmetric_difference, rings)
    return shapely.normalize(geom.simplify(0))


def polygon_parts(geom) -> list:
    """The polygons of a Polygon or MultiPolygon (largest first)."""
    parts = list(getattr(geom, "geoms", [geom]))
    return sorted((p for p in parts if p.geom_type == "Polygon" and not p.is_empty),
                  key=lambda p: -p.area)


def imagej_roi(inst: FoundInstance, geom, width: int):
    """A polygon ImageJ ROI of the instance's largest part (holes filled, as ImageJ polygons
    are single rings), named ``{category}-{id}``, grouped by category id, coloured by category."""
    from roifile import ROI_TYPE, ImagejRoi

    outline = np.asarray(polygon_parts(geom)[0].exterior.coords, dtype=np.float64)[:-1]
    roi = ImagejRoi.frompoints(outline, name=f"{inst.category}-{inst.id:0{width}d}")
    roi.roitype = ROI_TYPE.POLYGON
    roi.group = CATEGORY_IDS[inst.category]
    roi.stroke_color = bytes([255, *CATEGORY_COLOURS[inst.category]])  # ARGB
    return roi


def write_roi_zip(path: Path, rois: Sequence) -> None:
    """An ImageJ ROI set: one ``{name}.roi`` per ROI (roifile's bytes) in a zip with fixed
    member timestamps (``roifile.roiwrite`` stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for roi in rois:
            info = zipfile.ZipInfo(f"{roi.name}.roi", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, roi.tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def geojson_features(instances: Sequence[FoundInstance], geoms: Sequence) -> dict:
    """A GeoJSON FeatureCollection QuPath imports (File > Import objects): one detection per
    instance, classification = category, score and id as measurements."""
    from shapely.geometry import MultiPolygon, mapping
    from shapely.geometry.polygon import orient

    features = []
    for inst, geom in zip(instances, geoms):
        parts = [orient(p, 1.0) for p in polygon_parts(geom)]
        if not parts:
            continue
        shape = parts[0] if len(parts) == 1 else MultiPolygon(parts)
        features.append({
            "type": "Feature",
            "geometry": mapping(shape),
            "properties": {
                "objectType": "detection",
                "name": f"{inst.category} {inst.id}",
                "classification": {"name": inst.category, "color": list(CATEGORY_COLOURS[inst.category])},
                "measurements": {"id": inst.id, "score": round(inst.score, 6), "area_px": inst.area},
            },
        })
    return {"type": "FeatureCollection", "features": features}


# ----------------------------------------------------------------------------- measurements
def measurements(instances: Sequence[FoundInstance], image: str,
                 shape: tuple[int, int]) -> list[dict]:
    """One row per instance (``CSV_FIELDS``), in pixel units.

    ``overlap_area``: pixels the instance shares with other instances of its category
    (``overlaps_with``: their ids). Nuclei: ``cell_id``, the cell holding it. Cells:
    ``nucleus_ids`` (nuclei linked to it), ``nucleus_area`` (their pixels inside the cell) and
    ``nc_ratio`` = nucleus_area / (area - nucleus_area), the nucleus-to-cytoplasm ratio with
    the cytoplasm as the cell minus its nuclei (empty without a nucleus).
    """
    from skimage import measure

    coverage = {c: np.zeros(shape, dtype=np.uint16) for c in CATEGORY_ORDER}
    for inst in instances:
        coverage[inst.category][inst.box] += inst.crop
    nuclei_of: dict[int, list[FoundInstance]] = {}
    for n in instances:
        if n.category == "nucleus" and n.cell_id is not None:
            nuclei_of.setdefault(n.cell_id, []).append(n)
    rows = []
    for inst, near in zip(instances, box_neighbours(instances)):
        (y0, x0), (h, w) = inst.offset, inst.crop.shape
        ys, xs = np.nonzero(inst.crop)
        others = sorted(instances[j].id for j in near if instances[j].category == inst.category
                        and intersection(inst, instances[j]))
        row = {
            "image": image, "id": inst.id, "category": inst.category, "score": round(inst.score, 6),
            "area": inst.area,
            "perimeter": round(float(measure.perimeter(np.pad(inst.crop, 1))), 3),
            "centroid_x": round(float(xs.mean()) + x0 + 0.5, 3),
            "centroid_y": round(float(ys.mean()) + y0 + 0.5, 3),
            "bbox_x": x0, "bbox_y": y0, "bbox_width": w, "bbox_height": h,
            "overlap_area": int((coverage[inst.category][inst.box][inst.crop] >= 2).sum()),
            "overlaps_with": ";".join(map(str, others)),
            "cell_id": inst.cell_id if inst.cell_id is not None else "",
            "nucleus_ids": "", "nucleus_area": "", "nc_ratio": "",
        }
        if inst.category == "cytoplasm":
            nuclei = nuclei_of.get(inst.id, [])
            if nuclei:
                union = np.zeros(inst.crop.shape, dtype=bool)
                for n in nuclei:
                    _paste(union, inst.offset, n)
                inside = int((union & inst.crop).sum())
                row["nucleus_ids"] = ";".join(str(n.id) for n in nuclei)
                row["nucleus_area"] = inside
                row["nc_ratio"] = round(inside / (inst.area - inside), 6) if inst.area > inside else ""
        rows.append(row)
    return rows


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


# ----------------------------------------------------------------------------- COCO
def coco_document(instances: Sequence[FoundInstance], image: dict, info: dict) -> dict:
    """COCO instances of one image (id 1): RLE masks kept overlapping, scores, categories and
    ``parent_id`` (a nucleus' cell), the layout of overlapseg's canonical annotations."""
    anns = []
    for inst in instances:
        (y0, x0), (h, w) = inst.offset, inst.crop.shape
        anns.append({"id": inst.id, "image_id": 1, "category_id": CATEGORY_IDS[inst.category],
                     "segmentation": inst.segmentation, "score": round(inst.score, 6),
                     "area": inst.area, "bbox": [x0, y0, w, h], "iscrowd": 0,
                     "parent_id": inst.cell_id})
    return {"info": info, "images": [{"id": 1, **image}], "categories": CATEGORIES,
            "annotations": anns}


# ----------------------------------------------------------------------------- overlay
def display_image(image: np.ndarray) -> np.ndarray:
    """8-bit images as they are; other bit depths stretched to grey like the models see them."""
    if image.dtype == np.uint8:
        return image
    from overlapseg.data.preprocess import to_float_gray

    return to_float_gray(image)


def write_overlay(path: Path, image: np.ndarray, instances: Sequence[FoundInstance],
                  min_side: int = 1024) -> None:
    """The image with contours coloured by instance and cell overlaps hatched (the report's
    qualitative style), pixel-aligned; images smaller than ``min_side`` are enlarged by an
    integer factor so thin contours stay visible."""
    import matplotlib.pyplot as plt

    from overlapseg.report.figures import draw_instances

    h, w = image.shape[:2]
    zoom = max(1, -(-min_side // max(h, w)))
    anns = [{"category_id": CATEGORY_IDS[i.category], "segmentation": i.segmentation}
            for i in instances]
    fig = plt.figure(figsize=(w * zoom / 100, h * zoom / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    draw_instances(ax, display_image(image), anns, "")
    ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_geojson(path: Path, collection: dict) -> None:
    write_json(path, collection)

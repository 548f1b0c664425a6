"""``overlapseg segment``: image discovery and reading, the exporters on synthetic overlapping
instances (exact label layers, ROI/GeoJSON round trips, measurements) and the whole command
on generated images with a small SEU-Net trained here."""
import csv
import json
import zipfile

import cv2
import numpy as np
import pytest
import shapely
import tifffile
from roifile import ROI_TYPE, roiread
from shapely.geometry import shape as geo_shape

from overlapseg.cli import main
from overlapseg.data.canonical import (DataError, Instance, Sample, decode_segmentation,
                                       encode_mask, write_canonical_dataset)
from overlapseg.segment import export
from overlapseg.segment.images import (find_image_files, image_sources, output_stems,
                                       read_source)
from overlapseg.segment.run import (OUTPUTS, SUMMARY_FILE, parse_save, resample_factor,
                                    segment_images)
from overlapseg.train.base import DataRef, TrainInputs, load_trainers

SHAPE = (64, 80)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def synthetic_results():
    """COCO results of one image: a chain of overlapping cells (A-B, B-C; A and C apart), a
    ring cell (with a hole), a two-part cell, nuclei inside A and B (two in B) and a free
    nucleus. Listed out of order, so the id assignment is exercised."""
    a, b, c = disc(SHAPE, 20, 16, 10), disc(SHAPE, 20, 30, 10), disc(SHAPE, 20, 44, 10)
    ring = disc(SHAPE, 48, 16, 10) & ~disc(SHAPE, 48, 16, 4)
    parts = np.zeros(SHAPE, bool)
    parts[40:50, 40:48] = True
    parts[52:60, 52:60] = True
    nuc_a, nuc_b1, nuc_b2 = disc(SHAPE, 20, 14, 3), disc(SHAPE, 17, 31, 2), disc(SHAPE, 23, 31, 2)
    free = disc(SHAPE, 50, 72, 3)
    cells = [(b, 0.8), (a, 0.9), (c, 0.7), (ring, 0.6), (parts, 0.5)]
    nuclei = [(nuc_b1, 0.7), (nuc_a, 0.95), (free, 0.6), (nuc_b2, 0.5)]
    results = [{"image_id": 1, "category_id": 2, "segmentation": encode_mask(m), "score": s}
               for m, s in nuclei]
    results += [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(m), "score": s}
                for m, s in cells]
    return results


@pytest.fixture()
def found():
    return export.instances_from_results(synthetic_results(), SHAPE)


def masks_of(instances):
    return {i.id: i.full_mask(SHAPE) for i in instances}


# ----------------------------------------------------------------------------- instances
def test_ids_order_cells_first_by_score_and_nuclei_are_linked(found):
    assert [(i.id, i.category, i.score) for i in found] == [
        (1, "cytoplasm", 0.9), (2, "cytoplasm", 0.8), (3, "cytoplasm", 0.7), (4, "cytoplasm", 0.6),
        (5, "cytoplasm", 0.5), (6, "nucleus", 0.95), (7, "nucleus", 0.7), (8, "nucleus", 0.6),
        (9, "nucleus", 0.5)]
    assert {i.id: i.cell_id for i in found if i.category == "nucleus"} == {6: 1, 7: 2, 8: None, 9: 2}


def test_label_layers_reconstruct_every_mask_exactly(found, tmp_path):
    masks = masks_of(found)
    for category, n_layers in (("cytoplasm", 2), ("nucleus", 1)):
        layers = export.label_layers(found, category, SHAPE)
        # A and C share layer 1, B overlaps both and goes to layer 2
        assert len(layers) == n_layers
        for k, layer in enumerate(layers):
            path = tmp_path / f"{category}{k}.tif"
            export.write_tiff(path, layer)
            back = tifffile.imread(path)
            assert back.dtype == np.uint16 and np.array_equal(back, layer)
        for inst in (i for i in found if i.category == category):
            hits = [layer == inst.id for layer in layers]
            assert sum(h.any() for h in hits) == 1  # in exactly one layer
            assert np.array_equal(np.logical_or.reduce(hits), masks[inst.id])
    cyto = export.label_layers(found, "cytoplasm", SHAPE)
    assert set(np.unique(cyto[0])) == {0, 1, 3, 4, 5} and set(np.unique(cyto[1])) == {0, 2}


def test_geometry_covers_exactly_the_mask_pixel_centres(found):
    """A pixel is inside the polygon iff it is in the mask; holes and parts are kept."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    for inst in found:
        geom = export.instance_geometry(inst)
        assert geom.is_valid
        inside = shapely.contains_xy(geom, xx + 0.5, yy + 0.5)
        assert np.array_equal(inside, inst.full_mask(SHAPE)), inst.id
    ring, parts = export.instance_geometry(found[3]), export.instance_geometry(found[4])
    assert ring.geom_type == "Polygon" and len(ring.interiors) == 1
    assert parts.geom_type == "MultiPolygon" and len(parts.geoms) == 2


def test_roi_zip_round_trips_through_roifile(found, tmp_path):
    geoms = [export.instance_geometry(i) for i in found]
    rois = [export.imagej_roi(i, g, 1) for i, g in zip(found, geoms)]
    path = tmp_path / "rois.zip"
    export.write_roi_zip(path, rois)
    back = roiread(path)
    assert [r.name for r in back] == [f"{i.category}-{i.id}" for i in found]
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    for inst, geom, roi in zip(found, geoms, back):
        assert roi.roitype == ROI_TYPE.POLYGON
        assert roi.group == (1 if inst.category == "cytoplasm" else 2)
        written = shapely.Polygon(export.polygon_parts(geom)[0].exterior)
        read = shapely.Polygon(roi.coordinates())
        assert written.hausdorff_distance(read) <= 1.0
        if inst.id not in (4, 5):  # single rings: the ROI is the mask exactly
            assert np.array_equal(shapely.contains_xy(read, xx + 0.5, yy + 0.5), inst.full_mask(SHAPE))
    # the ring's ROI is its outline with the hole filled; the two-part cell's its larger part
    assert shapely.Polygon(back[3].coordinates()).area == pytest.approx(
        shapely.Polygon(geoms[3].exterior).area)
    assert shapely.Polygon(back[4].coordinates()).area == pytest.approx(
        max(p.area for p in geoms[4].geoms))
    with zipfile.ZipFile(path) as zf:  # fixed timestamps: reruns write the same bytes
        assert {i.date_time for i in zf.infolist()} == {export.ZIP_DATE}


def test_geojson_round_trips_and_classifies_by_category(found, tmp_path):
    geoms = [export.instance_geometry(i) for i in found]
    path = tmp_path / "x.geojson"
    export.write_geojson(path, export.geojson_features(found, geoms))
    features = json.loads(path.read_text())["features"]
    assert len(features) == len(found)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    for inst, geom, feat in zip(found, geoms, features):
        props = feat["properties"]
        assert props["classification"]["name"] == inst.category
        assert props["objectType"] == "detection" and props["measurements"]["id"] == inst.id
        read = geo_shape(feat["geometry"])
        assert read.hausdorff_distance(geom) <= 1.0 and read.symmetric_difference(geom).area < 1e-9
        assert np.array_equal(shapely.contains_xy(read, xx + 0.5, yy + 0.5), inst.full_mask(SHAPE))


def test_measurements_match_the_masks(found, tmp_path):
    rows = export.measurements(found, "img", SHAPE)
    path = tmp_path / "m.csv"
    export.write_csv(path, rows)
    back = list(csv.DictReader(open(path)))
    masks = masks_of(found)
    assert [int(r["id"]) for r in back] == [i.id for i in found]
    for r in back:
        m = masks[int(r["id"])]
        ys, xs = np.nonzero(m)
        assert int(r["area"]) == m.sum()
        assert float(r["centroid_x"]) == pytest.approx(xs.mean() + 0.5, abs=1e-3)
        assert float(r["centroid_y"]) == pytest.approx(ys.mean() + 0.5, abs=1e-3)
        assert [int(r[k]) for k in ("bbox_x", "bbox_y", "bbox_width", "bbox_height")] == \
            [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert float(r["perimeter"]) > 0
    by_id = {int(r["id"]): r for r in back}
    a, b, c = masks[1], masks[2], masks[3]
    assert int(by_id[2]["overlap_area"]) == ((a | c) & b).sum() > 0
    assert by_id[2]["overlaps_with"] == "1;3" and by_id[4]["overlaps_with"] == ""
    assert int(by_id[1]["overlap_area"]) == (a & b).sum()
    # nucleus links and the nucleus-to-cytoplasm ratio
    assert by_id[2]["nucleus_ids"] == "7;9" and by_id[7]["cell_id"] == "2" and by_id[8]["cell_id"] == ""
    nuc = (masks[7] | masks[9]) & b
    assert int(by_id[2]["nucleus_area"]) == nuc.sum()
    assert float(by_id[2]["nc_ratio"]) == pytest.approx(nuc.sum() / (b.sum() - nuc.sum()), abs=1e-6)
    assert by_id[3]["nc_ratio"] == "" and by_id[3]["nucleus_ids"] == ""


def test_coco_document_keeps_overlapping_masks(found):
    doc = export.coco_document(found, {"name": "img", "file_name": "img.png", "width": SHAPE[1],
                                       "height": SHAPE[0]}, {"model_sha256": "x"})
    masks = masks_of(found)
    assert [c["name"] for c in doc["categories"]] == ["cytoplasm", "nucleus"]
    for ann in doc["annotations"]:
        m = decode_segmentation(ann["segmentation"], *SHAPE)
        assert np.array_equal(m, masks[ann["id"]]) and ann["area"] == m.sum()
    assert {a["id"]: a["parent_id"] for a in doc["annotations"]}[9] == 2


def test_overlay_is_written_at_an_integer_zoom(found, tmp_path):
    image = np.full(SHAPE, 200, np.uint8)
    export.write_overlay(tmp_path / "o.png", image, found)
    out = cv2.imread(str(tmp_path / "o.png"))
    zoom = -(-1024 // max(SHAPE))
    assert out.shape[:2] == (SHAPE[0] * zoom, SHAPE[1] * zoom)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 3  # contours drawn on the grey image


# ----------------------------------------------------------------------------- images
def write_inputs(folder, base):
    """Grey PNG, RGB PNG, 16-bit TIFF, a 3-page TIFF and a truncated PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "grey.png"), base)
    cv2.imwrite(str(folder / "colour.png"), np.dstack([base // 2, base, base]))  # BGR
    tifffile.imwrite(folder / "deep.tif", base.astype(np.uint16) * 200)
    tifffile.imwrite(folder / "pages.tif", np.stack([base, 255 - base, base]),
                     photometric="minisblack")
    (folder / "broken.png").write_bytes((folder / "grey.png").read_bytes()[:80])
    return folder


def test_image_sources_read_every_format(tmp_path):
    base = np.tile(np.arange(40, dtype=np.uint8)[None] * 5, (30, 1))
    folder = write_inputs(tmp_path / "in", base)
    sources = image_sources([folder])
    assert [s.name for s in sources] == ["broken", "colour", "deep", "grey", "pages_p1",
                                         "pages_p2", "pages_p3"]
    by = {s.name: s for s in sources}
    with pytest.raises(DataError, match="broken.png: truncated or corrupt"):
        read_source(by["broken"])
    colour = read_source(by["colour"])
    assert colour.shape == (30, 40, 3) and np.array_equal(colour[..., 2], base // 2)  # RGB order
    deep = read_source(by["deep"])
    assert deep.dtype == np.uint16 and np.array_equal(deep, base.astype(np.uint16) * 200)
    assert np.array_equal(read_source(by["grey"]), base)
    assert np.array_equal(read_source(by["pages_p2"]), 255 - base)
    rgb_tiff = tmp_path / "rgb.tiff"
    tifffile.imwrite(rgb_tiff, np.dstack([base, base, base]), photometric="rgb")
    (src,) = image_sources([rgb_tiff])
    assert src.plane is None and read_source(src).shape == (30, 40, 3)
    bad_tiff = tmp_path / "bad.tif"
    bad_tiff.write_bytes(b"II*\x00garbage")
    (bad,) = image_sources([bad_tiff])
    with pytest.raises(DataError, match="bad.tif: unreadable TIFF"):
        read_source(bad)


def test_find_image_files_patterns_and_errors(tmp_path):
    base = np.zeros((8, 8), np.uint8)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "x.png"), base)
    cv2.imwrite(str(tmp_path / "a" / "y.jpg"), base)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    files = find_image_files([str(tmp_path / "*" / "x.png"), tmp_path / "a"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/x.png", "b/x.png", "a/y.jpg"]
    assert output_stems(files) == ["a__x", "b__x", "y"]
    with pytest.raises(DataError, match="nope.png: no such image file or folder"):
        find_image_files([tmp_path / "nope.png"])
    with pytest.raises(DataError, match=r"\*\.tif: pattern matches no image files"):
        find_image_files([str(tmp_path / "*.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder holds no image files"):
        find_image_files([tmp_path / "empty"])


def test_options_are_checked():
    assert parse_save(None) == OUTPUTS and parse_save("csv,coco") == ("coco", "csv")
    with pytest.raises(ValueError, match="choose among"):
        parse_save("coco,masks")
    assert resample_factor(0.5) == 1.0
    assert resample_factor(0.5, scale=1.0) == 2.0
    assert resample_factor(1.0, pixel_size=0.25, model_pixel_size=0.5) == 0.5
    with pytest.raises(ValueError, match="needs --model-pixel-size"):
        resample_factor(1.0, pixel_size=0.25)
    with pytest.raises(ValueError, match="finite and > 0"):
        resample_factor(1.0, scale=0.0)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small SEU-Net (40 iterations, a few seconds) that finds the discs of its data."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(3):
        image = np.full((48, 48), 220, np.uint8)
        instances = []
        cy, cx = rng.integers(18, 26, 2)
        for dx in (-7, 7):
            cell, nuc = disc((48, 48), cy, cx + dx, 11), disc((48, 48), cy, cx + dx, 3)
            image[cell] -= 50
            image[nuc] -= 60
            instances += [Instance(cell, "cytoplasm"), Instance(nuc, "nucleus", len(instances))]
        samples.append(Sample(f"img{i}", image, instances))
    root = tmp_path_factory.mktemp("segment")
    data = write_canonical_dataset(samples, root / "data")
    klass = load_trainers()["seunet"]
    params = {**klass.SMOKE_PARAMS, "iterations": 40, "lr": 0.01, "checkpoint_every": 100, "threads": 1}
    inputs = TrainInputs([DataRef(data, ["img0", "img1"])], DataRef(data, ["img2"]))
    path = klass(params, 0, "cpu", inputs).train(root / "model")
    return path, cv2.imread(str(data / "images" / "img0.png"), cv2.IMREAD_UNCHANGED)


def test_segment_command_writes_every_output(model, tmp_path, capsys):
    model_path, base = model
    folder = write_inputs(tmp_path / "in", base)
    out = tmp_path / "out"
    rc = main(["segment", str(model_path), str(folder), "--out", str(out), "--threads", "1"])
    assert rc == 1  # the truncated file failed
    err = capsys.readouterr().err
    assert "segment: skipped " + str(folder / "broken.png") + ": truncated or corrupt image" in err
    assert "segment: 6 of 7 images segmented" in err
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert [f["file"] for f in summary["failed"]] == [str(folder / "broken.png")]
    assert len(summary["model"]["sha256"]) == 64 and summary["model"]["trainer"] == "seunet"
    names = [r["name"] for r in summary["images"]]
    assert names == ["colour", "deep", "grey", "pages_p1", "pages_p2", "pages_p3"]
    assert sum(sum(r["instances"].values()) for r in summary["images"]) > 0
    all_rows = list(csv.DictReader(open(out / "measurements.csv")))
    for record in summary["images"]:
        name = record["name"]
        assert set(record["outputs"]) == set(OUTPUTS)
        for paths in record["outputs"].values():
            assert all((out / p["path"]).is_file() for p in paths)
        coco = json.loads((out / f"{name}.coco.json").read_text())
        assert coco["info"]["model_sha256"] == summary["model"]["sha256"]
        h, w = coco["images"][0]["height"], coco["images"][0]["width"]
        masks = {a["id"]: decode_segmentation(a["segmentation"], h, w) for a in coco["annotations"]}
        cats = {a["id"]: a["category_id"] for a in coco["annotations"]}
        # label layers: every COCO instance exactly, once
        for cat_id, cat in ((1, "cytoplasm"), (2, "nucleus")):
            layers = [tifffile.imread(out / p["path"]) for p in record["outputs"]["labels"]
                      if f".{cat}.layer" in p["path"]]
            assert layers and all(layer.dtype == np.uint16 for layer in layers)
            for i in (i for i in masks if cats[i] == cat_id):
                assert np.array_equal(np.logical_or.reduce([layer == i for layer in layers]), masks[i])
            assert set(np.unique(layers)) - {0} == {i for i in masks if cats[i] == cat_id}
        rows = list(csv.DictReader(open(out / f"{name}.csv")))
        assert {int(r["id"]): int(r["area"]) for r in rows} == {i: int(m.sum()) for i, m in masks.items()}
        assert [r for r in all_rows if r["image"] == name] == rows
        rois = roiread(out / f"{name}.rois.zip") if masks else []
        assert len(rois) == len(masks)
        features = json.loads((out / f"{name}.geojson").read_text())["features"]
        yy, xx = np.mgrid[:h, :w]
        for feat in features:
            i = feat["properties"]["measurements"]["id"]
            inside = shapely.contains_xy(geo_shape(feat["geometry"]), xx + 0.5, yy + 0.5)
            assert np.array_equal(inside, masks[i])
    # the same run again writes the same bytes (timing apart)
    out2 = tmp_path / "out2"
    segment_images(model_path, [folder], out2, threads=1, progress=False)
    for path in sorted(out.iterdir()):
        if path.name not in ("segment_timing.json",):
            assert path.read_bytes() == (out2 / path.name).read_bytes(), path.name


def test_segment_saves_only_what_is_asked_and_rejects_a_missing_image(model, tmp_path, capsys):
    model_path, base = model
    cv2.imwrite(str(tmp_path / "one.png"), base)
    out = tmp_path / "out"
    assert main(["segment", str(model_path), str(tmp_path / "one.png"), "--out", str(out),
                 "--save", "csv,labels", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "measurements.csv", "one.csv", "one.cytoplasm.layer1.tif", "one.nucleus.layer1.tif",
        "segment_summary.json", "segment_timing.json"]
    rows = list(csv.DictReader(open(out / "one.csv")))
    assert rows and main(["segment", str(model_path), str(tmp_path / "one.png"), "--out", str(out),
                          "--save", "csv", "--min-score", "1.01"]) == 0
    assert list(csv.DictReader(open(out / "one.csv"))) == []  # every score is below 1.01
    assert main(["segment", str(model_path), str(tmp_path / "two.png"), "--out", str(out)]) == 2
    assert "two.png: no such image file or folder" in capsys.readouterr().err


def test_a_failed_write_leaves_no_outputs_of_that_image(model, tmp_path, monkeypatch):
    model_path, base = model
    cv2.imwrite(str(tmp_path / "one.png"), base)

    def full_disk(path, *args):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(export, "write_overlay", full_disk)
    summary = segment_images(model_path, [tmp_path / "one.png"], tmp_path / "out", threads=1,
                             progress=False)
    assert [f["error"] for f in summary["failed"]] == [
        f"{tmp_path / 'one.png'}: {tmp_path / 'out' / 'one.overlay.png'}: No space left on device"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "measurements.csv", "segment_summary.json", "segment_timing.json"]

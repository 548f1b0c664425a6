"""Apply a trained model to plain images: the loop behind ``overlapseg segment``.

The trainer, its params and the training pixel scale come from ``model.pt``
(:meth:`Trainer.load`); each image is predicted through :meth:`Trainer.predict_at_scale`, the
path ``overlapseg predict`` takes (resampling to the training pixel scale, the trainer's own
tiling of large images). An image that cannot be read or predicted is reported in one line and
skipped; the run goes on and lists it in the summary.

Files written to ``out_dir`` per image ``{name}`` (``save`` picks among them):

* ``coco``: ``{name}.coco.json``
* ``labels``: ``{name}.{category}.layer{k}.tif``
* ``roi``: ``{name}.rois.zip``
* ``geojson``: ``{name}.geojson``
* ``overlay``: ``{name}.overlay.png``
* ``csv``: ``{name}.csv``, and ``measurements.csv`` over all images

plus ``segment_summary.json`` (model sha256 and training record, each input's and each
output's sha256, the failed images) and ``segment_timing.json`` (seconds per image; apart, so
the summary is identical on rerun).
"""
from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from overlapseg.utils.cli import error_line
from overlapseg.segment import export
from overlapseg.segment.images import ImageSource, image_sources, read_source
from overlapseg.utils.io import sha256_file, write_json


OUTPUTS = ("coco", "labels", "roi", "geojson", "overlay", "csv")
SUMMARY_FORMAT = "overlapseg-segment-1"
SUMMARY_FILE = "segment_summary.json"
TIMING_FILE = "segment_timing.json"
COMBINED_CSV = "measurements.csv"
# Errors that fail one image, not the run: bad or unreadable data (DataError is a ValueError),
# failed reads/writes, and runtime failures of the model such as running out of memory.
IMAGE_ERRORS = (ValueError, OSError, RuntimeError, MemoryError)


def parse_save(save: str | Sequence[str] | None) -> tuple[str, ...]:
    """Outputs to write, in ``OUTPUTS`` order (None: all); unknown names are an error."""
    if save is None:
        return OUTPUTS
    names = [s.strip() for s in (save.split(",") if isinstance(save, str) else save) if s.strip()]
    unknown = sorted(set(names) - set(OUTPUTS))
    if unknown or not names:
        raise ValueError(f"--save {','.join(names) or save!r}: choose among {','.join(OUTPUTS)}")
    return tuple(o for o in OUTPUTS if o in names)


def resample_factor(train_scale: float, scale: float | None = None, pixel_size: float | None = None,
                    model_pixel_size: float | None = None) -> float:
    """Factor resizing the images to the model's training pixel scale.

    ``scale``: the images' factor to the study's reference pixel size (as
    ``datasets.<name>.scale``), against the ``train_scale`` stored in ``model.pt``.
    ``pixel_size`` / ``model_pixel_size``: physical pixel sizes (any one unit) of the images
    and of the model's training images. Neither: the images are taken to be at the model's
    scale (no resampling).
    """
    given = [v for v in (scale, pixel_size, model_pixel_size) if v is not None]
    if any(not np.isfinite(v) or v <= 0 for v in given):
        raise ValueError(f"scale and pixel sizes must be finite and > 0, got {given}")
    if scale is not None and (pixel_size is not None or model_pixel_size is not None):
        raise ValueError("give either --scale or --pixel-size with --model-pixel-size, not both")
    if (pixel_size is None) != (model_pixel_size is None):
        raise ValueError("--pixel-size needs --model-pixel-size (model.pt records no pixel size, "
                         "only the training data's scale factor; or use --scale)")
    if scale is not None:
        return float(scale) / float(train_scale)
    if pixel_size is not None:
        return float(pixel_size) / float(model_pixel_size)
    return 1.0


def _versions() -> dict:
    from overlapseg.provenance import git_commit, package_versions

    versions = package_versions()
    for name in ("tifffile", "roifile", "shapely", "matplotlib"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"git": git_commit(), "packages": versions, "python": platform.python_version()}


def _model_dir(model_path) -> Path:
    """The folder :meth:`Trainer.load` reads: ``model.pt`` itself or the folder holding it."""
    path = Path(model_path)
    if path.is_dir():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: trained model not found")
    if path.name != "model.pt":
        raise ValueError(f"{path}: expected the model.pt that `overlapseg train` writes "
                         "(or its folder)")
    return path.parent


def segment_one(trainer, net, source: ImageSource, out_dir: Path, save: Sequence[str],
                factor: float, model_info: dict, partial: list[Path], min_score: float = 0.0) -> dict:
    """Predict one image and write its outputs (each path is added to ``partial`` before it
    is written); returns its summary record."""
    import torch

    from overlapseg.data.preprocess import to_float_gray

    image = read_source(source)
    h, w = image.shape[:2]

    with torch.no_grad():
        results, semantic = trainer.predict_at_scale(net, to_float_gray(image), 1, factor)
    results = [r for r in results if float(r.get("score", 1.0)) >= min_score]
    instances = export.instances_from_results(results, (h, w))
    present = {i.category for i in instances}
    categories = [c for c in export.CATEGORY_ORDER if c in semantic or c in present]
    name = source.name
    written: dict[str, list[Path]] = {}

    def output(kind: str, filename: str) -> Path:
        path = out_dir / filename
        written.setdefault(kind, []).append(path)
        partial.append(path)
        return path

    if "coco" in save:
        info = {"description": "overlapseg segment", "model_sha256": model_info["sha256"],
                "trainer": model_info["trainer"], "image_file": str(source.path),
                "image_page": None if source.plane is None else source.plane + 1,
                "resample_factor": factor}
        write_json(output("coco", f"{name}.coco.json"), export.coco_document(
            instances, {"name": name, "file_name": source.path.name, "width": w, "height": h}, info))
    if "labels" in save:
        for category in export.CATEGORY_ORDER:  # an earlier run's layers of this image
            for stale in out_dir.glob(f"{glob.escape(name)}.{category}.layer*.tif"):
                if re.fullmatch(r"layer\d+", stale.name[len(name) + len(category) + 2:-4]):
                    stale.unlink()
        for category in categories:
            for k, layer in enumerate(export.label_layers(instances, category, (h, w)), start=1):
                export.write_tiff(output("labels", f"{name}.{category}.layer{k}.tif"), layer)
    if "roi" in save or "geojson" in save:
        geoms = [export.instance_geometry(i) for i in instances]
        if "roi" in save:
            width = len(str(len(instances)))
            rois = [export.imagej_roi(i, g, width) for i, g in zip(instances, geoms)
                    if export.polygon_parts(g)]
            export.write_roi_zip(output("roi", f"{name}.rois.zip"), rois)
        if "geojson" in save:
            export.write_geojson(output("geojson", f"{name}.geojson"),
                                 export.geojson_features(instances, geoms))
    if "overlay" in save:
        export.write_overlay(output("overlay", f"{name}.overlay.png"), image, instances)
    rows = export.measurements(instances, name, (h, w)) if "csv" in save else []
    if "csv" in save:
        export.write_csv(output("csv", f"{name}.csv"), rows)
    counts = {c: sum(i.category == c for i in instances) for c in categories}
    return {"name": name, "file": str(source.path),
            "page": None if source.plane is None else source.plane + 1,
            "width": w, "height": h, "instances": counts,
            "outputs": {kind: [{"path": p.name, "sha256": sha256_file(p)} for p in paths]
                        for kind, paths in written.items()},
            "_rows": rows}


def segment_images(model_path, inputs: Sequence[str | os.PathLike], out_dir, save=None,
                   scale: float | None = None, device: str = "cpu", threads: int | None = 1,
                   pixel_size: float | None = None, model_pixel_size: float | None = None,
                   params: dict | None = None, min_score: float = 0.0,
                   progress: bool = True) -> dict:
    """Segment every image named by ``inputs`` (files, folders, globs) with ``model_path``
    (a ``model.pt`` or its folder) into ``out_dir``; returns the summary also written to
    ``out_dir/segment_summary.json`` (``failed``: one ``{file, error}`` per skipped image).

    ``params``: inference params of the trainer to override (thresholds, tiles).
    ``min_score``: instances scored below it are left out (0: all the model reports, as
    ``overlapseg predict`` does; detectors report down to their ``score_threshold``).
    """
    from tqdm import tqdm

    from overlapseg.train.api import resolve_device
    from overlapseg.train.base import Trainer, set_threads

    save = parse_save(save)
    out_dir = Path(out_dir)
    model_dir = _model_dir(model_path)
    resample_factor(1.0, scale, pixel_size, model_pixel_size)  # bad options fail before loading
    if not np.isfinite(min_score):
        raise ValueError(f"--min-score must be a finite number, got {min_score}")
    sources = image_sources(inputs)  # so do a missing path and an empty folder
    device = resolve_device(device)
    trainer, net = Trainer.load(model_dir, device, {**(params or {}), "threads": threads})
    if not trainer.PRODUCES_INSTANCES:
        raise ValueError(f"{model_dir / 'model.pt'}: a {trainer.name} image generator, "
                         "not a segmentation model")
    set_threads(threads)
    factor = resample_factor(trainer.train_scale, scale, pixel_size, model_pixel_size)
    model_file = model_dir / "model.pt"
    model_info = {"path": str(model_file), "sha256": sha256_file(model_file),
                  "trainer": trainer.name, "seed": trainer.seed,
                  "iterations": int(trainer.params["iterations"]),
                  "train_scale": trainer.train_scale, "params": trainer.params}
    out_dir.mkdir(parents=True, exist_ok=True)

    images, failed, seconds, rows = [], [], {}, []
    file_sha: dict[Path, str] = {}
    bar = tqdm(sources, desc=f"segment {trainer.experiment}", unit="image", disable=not progress)
    for source in bar:
        t0 = time.perf_counter()
        try:
            partial: list[Path] = []
            record = segment_one(trainer, net, source, out_dir, save, factor, model_info, partial,
                                 min_score)
        except IMAGE_ERRORS as exc:
            for path in partial:  # no half set of outputs for a failed image
                path.unlink(missing_ok=True)
            line = error_line(exc)
            if source.label not in line and str(source.path) not in line:
                line = f"{source.label}: {line}"
            bar.write(f"segment: skipped {line}", file=sys.stderr)
            failed.append({"file": str(source.path), "page": None if source.plane is None
                           else source.plane + 1, "name": source.name, "error": line})
            continue
        seconds[source.name] = round(time.perf_counter() - t0, 4)
        if source.path not in file_sha:
            file_sha[source.path] = sha256_file(source.path)
        record["sha256"] = file_sha[source.path]
        rows += record.pop("_rows")
        images.append(record)
    if "csv" in save:
        export.write_csv(out_dir / COMBINED_CSV, rows)
    summary = {"format": SUMMARY_FORMAT, "model": model_info, "device": device,
               "threads": threads, "save": list(save), "scale": scale, "pixel_size": pixel_size,
               "model_pixel_size": model_pixel_size, "resample_factor": factor,
               "min_score": min_score,
               "label_layers": "one uint16 image per category per layer; an instance goes into "
                               "the first layer of its category it does not overlap; values = ids",
               "images": images, "failed": failed, **_versions()}
    write_json(out_dir / SUMMARY_FILE, summary)
    total = sum(seconds.values())
    write_json(out_dir / TIMING_FILE, {
        "device": device, "threads": threads, "images": len(seconds), "seconds": round(total, 3),
        "seconds_per_image": round(total / len(seconds), 4) if seconds else None,
        "per_image": seconds})
    return summary

"""Find and read the images a user points ``overlapseg segment`` at.

Arguments are files, folders (their PNG, JPEG and TIFF files, not recursive) or glob patterns
(``**`` recurses). Each TIFF plane is one image: a multi-page TIFF (or a stack stored as one
series) gives one image per page, named ``{stem}_p{page}`` (1-based). PNG and JPEG are read
like the canonical datasets (:func:`overlapseg.data.canonical.read_image`, which also detects
truncated files); TIFF through ``tifffile``, which reads 16-bit, multi-page and
planar-configuration files that OpenCV does not.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from overlapseg.data.canonical import DataError, read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class ImageSource:
    """One image to segment: a file, or one plane of a TIFF file (``plane`` 0-based)."""

    name: str  # output file stem, unique within a run
    path: Path
    plane: int | None = None  # index among the TIFF's planes (None: the file is one image)
    error: str | None = None  # why the file could not even be opened (reported when segmented)

    @property
    def label(self) -> str:
        """The file (and page) as a user would name it in an error line."""
        return f"{self.path} (page {self.plane + 1})" if self.plane is not None else str(self.path)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def find_image_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``inputs`` (files, folders, glob patterns), in argument order,
    folders and patterns sorted, each file once. A path that does not exist, a pattern that
    matches no image and a folder without images are errors naming the argument."""
    if not inputs:
        raise ValueError("no images given: name image files, folders or glob patterns")
    files: list[Path] = []
    for arg in map(str, inputs):
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(path, f"folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            found = [path]
        elif _is_pattern(arg):
            found = sorted(Path(p) for p in glob.glob(arg, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(arg, "pattern matches no image files")
        else:
            raise DataError(path, "no such image file or folder")
        files += found
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_stems(files: Sequence[Path]) -> list[str]:
    """A unique output stem per file: its stem, or, for files sharing a stem, their path
    below the common folder joined by ``__`` (plus the suffix where that is still shared)."""
    stems = [f.stem for f in files]
    dup = {s for s in stems if stems.count(s) > 1}
    if not dup:
        return stems
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved]))
    names = []
    for f, r, s in zip(files, resolved, stems):
        names.append("__".join(r.relative_to(common).with_suffix("").parts) if s in dup else s)
    again = {n for n in names if names.count(n) > 1}
    return [f"{n}_{f.suffix.lstrip('.').lower()}" if n in again else n for n, f in zip(names, files)]


def _tiff_planes(path: Path) -> int:
    """Number of 2-D images (grey or RGB planes) in a TIFF file's series."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return sum(_series_layout(s)[0] for s in tif.series)


def _series_layout(series) -> tuple[int, tuple[int, ...]]:
    """(number of planes, plane shape) of a tifffile series: every axis but Y, X and the
    samples axis S (RGB) is a stack of planes."""
    axes, shape = series.axes, series.shape
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"image axes {axes!r} have no Y and X")
    plane = tuple(shape[axes.index(a)] for a in "YXS" if a in axes)
    return int(np.prod(shape) // max(1, int(np.prod(plane)))), plane


def image_sources(inputs: Sequence[str | os.PathLike]) -> list[ImageSource]:
    """Every image to segment, with unique output names. A TIFF that cannot be opened becomes
    one source carrying the error, so the run reports it and goes on."""
    files = find_image_files(inputs)
    sources = []
    for path, stem in zip(files, output_stems(files)):
        if path.suffix.lower() not in TIFF_SUFFIXES:
            sources.append(ImageSource(stem, path))
            continue
        try:
            n = _tiff_planes(path)
        except Exception as exc:  # noqa: BLE001 - tifffile raises many types for bad files
            sources.append(ImageSource(stem, path, error=f"unreadable TIFF ({_short(exc)})"))
            continue
        if n == 0:
            sources.append(ImageSource(stem, path, error="unreadable TIFF (no image pages)"))
        elif n == 1:
            sources.append(ImageSource(stem, path, plane=None))
        else:
            width = len(str(n))
            sources += [ImageSource(f"{stem}_p{k + 1:0{width}d}", path, plane=k) for k in range(n)]
    return sources


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _as_grey_or_rgb(image: np.ndarray, label: str) -> np.ndarray:
    """(H, W) or (H, W, 3): drops an alpha channel and a single sample axis."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3):
        if min(image.shape[:2]) < 1:
            raise DataError(label, f"empty image of shape {image.shape}")
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
            raise DataError(label, f"unsupported pixel type {image.dtype}")
        return image
    raise DataError(label, f"unsupported image shape {image.shape}: only grey or RGB images")


def _planes(data: np.ndarray, axes: str, plane_shape: tuple[int, ...]) -> np.ndarray:
    """``data`` with axes ``axes`` as a stack of planes (N, Y, X[, S])."""
    order = [axes.index(a) for a in axes if a not in "YXS"] + [axes.index(a) for a in "YXS" if a in axes]
    return np.transpose(data, order).reshape((-1, *plane_shape))


def read_source(source: ImageSource) -> np.ndarray:
    """The pixels of one source, (H, W) grey or (H, W, 3) RGB at their bit depth; DataError
    naming the file (and page) if it is unreadable, truncated or not grey/RGB."""
    if source.error:
        raise DataError(source.path, source.error)
    if source.path.suffix.lower() not in TIFF_SUFFIXES:
        return _as_grey_or_rgb(read_image(source.path), str(source.path))
    import tifffile

    try:
        with tifffile.TiffFile(source.path) as tif:
            k = source.plane or 0
            for series in tif.series:
                n, plane_shape = _series_layout(series)
                if k < n:
                    break
                k -= n
            else:
                raise ValueError(f"page {source.plane + 1} not found")
            pages = series.pages
            if len(pages) == n and pages[k] is not None:  # one page per plane: read only it
                page = pages[k]
                image = _planes(page.asarray(), page.axes, plane_shape)[0]
            else:  # e.g. an ImageJ stack stored contiguously: one series, few pages
                image = _planes(series.asarray(), series.axes, plane_shape)[k]
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile/imagecodecs raise many types
        raise DataError(source.label, f"unreadable TIFF ({_short(exc)})") from None
    return _as_grey_or_rgb(np.ascontiguousarray(image), source.label)

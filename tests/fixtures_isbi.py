"""Tiny, valid ISBI 2014 files for tests (importable by any test module).

``write_isbi_fixture`` draws random overlapping elliptical cells with one round nucleus
each and writes them in either archive layout, as MATLAB v5 (``scipy.io.savemat``, cell
arrays as object arrays) or v7.3 (HDF5 the way MATLAB lays it out). ``write_edf_fixture``
writes ``EDF/EDFnnn.png`` images with nucleus ground truth drawn as filled discs, closed
outlines and broken outlines.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

from overlapseg.data.adapters.matlab import save_mat_v73

FILES = {
    "train45test90": {
        "train": ("isbi_train.mat", "isbi_train_GT.mat", "ISBI_Train"),
        "test": ("isbi_test90.mat", "isbi_test90_GT.mat", "ISBI_Test90"),
    },
    "dataset_zip": {
        "train": ("Synthetic/trainset.mat", "Synthetic/trainset_GT.mat", "trainset"),
        "test": ("Synthetic/testset.mat", "Synthetic/testset_GT.mat", "testset"),
    },
}


def _cell_array(items: list) -> np.ndarray:
    """A MATLAB n x 1 cell array as scipy.io.savemat expects it (object ndarray)."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def random_cells(rng: np.random.Generator, size: int, n_cells: int):
    """(image uint8, cell masks list, nuclei union mask, nuclei masks list) for one image.

    Cells are overlapping ellipses; each has one disc nucleus at its centre, kept apart
    from the other nuclei so connected components recover them one by one.
    """
    yy, xx = np.mgrid[:size, :size]
    cells, nuclei, centres = [], [], []
    r_nuc = max(2, size // 20)
    attempts = 0
    while len(cells) < n_cells:
        attempts += 1
        if attempts > 1000:
            raise RuntimeError("could not place cells; use a larger size")
        cy, cx = rng.uniform(size * 0.25, size * 0.75, 2)
        if any(np.hypot(cy - y, cx - x) < 3 * r_nuc for y, x in centres):
            continue
        a, b = rng.uniform(size * 0.12, size * 0.25, 2)
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        cells.append((u / a) ** 2 + (v / b) ** 2 <= 1)
        nuclei.append((xx - cx) ** 2 + (yy - cy) ** 2 <= r_nuc ** 2)
        centres.append((cy, cx))
    nuc_union = np.any(nuclei, axis=0)
    cover = np.sum(cells, axis=0)
    image = 210 - 35 * cover - 60 * nuc_union + rng.normal(0, 4, (size, size))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, cells, nuc_union, nuclei


def write_isbi_fixture(folder, n_images: int = 3, size: int = 64, cells=(2, 3), seed: int = 0,
                       layout: str = "train45test90", v73: bool = False,
                       subsets=("train", "test")) -> dict:
    """Write fake-but-valid ISBI 2014 files under ``folder``.

    ``n_images`` images per subset; ``cells`` = (min, max) cells per image, inclusive.
    ``layout``: ``"train45test90"`` (isbi_train*.mat, isbi_test90*.mat in ``folder``) or
    ``"dataset_zip"`` (``folder/Synthetic/{trainset,testset}*.mat``). ``v73`` writes the
    files as MATLAB v7.3 (HDF5). Returns ``{"files": [paths], subset: [{"cells": k,
    "nuclei": k, "image": array, "cell_masks": [...], "nuclei_masks": [...]}, ...]}``.
    """
    if layout not in FILES:
        raise ValueError(f"layout must be one of {sorted(FILES)}")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    info: dict = {"files": []}
    for subset in subsets:
        image_file, gt_file, image_key = FILES[layout][subset]
        images, cytos, nucs, truth = [], [], [], []
        for _ in range(n_images):
            k = int(rng.integers(cells[0], cells[1] + 1))
            image, cell_masks, nuc_union, nuclei = random_cells(rng, size, k)
            images.append(image)
            cytos.append(_cell_array([m.astype(np.uint8) for m in cell_masks]))
            nucs.append(nuc_union.astype(np.uint8))
            truth.append({"cells": k, "nuclei": len(nuclei), "image": image,
                          "cell_masks": cell_masks, "nuclei_masks": nuclei})
        gt = {f"{subset}_Cytoplasm": _cell_array(cytos), f"{subset}_Nuclei": _cell_array(nucs),
              "CellNum": np.array([[t["cells"]] for t in truth], dtype=np.uint8),
              "OverlapRatio": np.zeros((n_images, 2))}
        for name, variables in ((image_file, {image_key: _cell_array(images)}), (gt_file, gt)):
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if v73:
                save_mat_v73(path, variables)
            else:
                savemat(str(path), variables, do_compression=True)
            info["files"].append(path)
        info[subset] = truth
    return info


def _ring(yy, xx, cy, cx, r, width=1):
    d = np.hypot(yy - cy, xx - cx)
    return (d <= r) & (d > r - width)


def write_edf_fixture(folder, n_images: int = 2, size: int = 96, seed: int = 0) -> list[dict]:
    """Write ``folder/EDF/EDF000.png``... with ``EDF000_GT.png`` nucleus annotations.

    Each GT holds one filled disc, one closed 1-px outline (8-connected, as drawn by
    cv2.circle) and one broken outline (an arc with a gap). Returns per image the
    expected counts ``{"name", "instances", "unclosed", "closed_mask", "filled_mask"}``.
    """
    folder = Path(folder) / "EDF"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n_images):
        gt = np.zeros((size, size), np.uint8)
        r = size // 10
        filled_c = (size // 4, size // 4)
        closed_c = (size // 4, 3 * size // 4)
        broken_c = (3 * size // 4, size // 2)
        filled = (yy - filled_c[0]) ** 2 + (xx - filled_c[1]) ** 2 <= r ** 2
        gt[filled] = 255
        cv2.circle(gt, (closed_c[1], closed_c[0]), r, 255, 1, lineType=cv2.LINE_8)
        cv2.ellipse(gt, (broken_c[1], broken_c[0]), (r, r), 0, 30, 330, 255, 1, cv2.LINE_8)
        closed_mask = np.zeros_like(gt)
        cv2.circle(closed_mask, (closed_c[1], closed_c[0]), r, 255, -1, lineType=cv2.LINE_8)
        image = 200 - 90 * (gt > 0)[:, :, None] + rng.normal(0, 5, (size, size, 3))
        image = np.clip(image, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"EDF{i:03d}.png"), image)
        cv2.imwrite(str(folder / f"EDF{i:03d}_GT.png"), gt)
        out.append({"name": f"EDF{i:03d}", "instances": 2, "unclosed": 1,
                    "closed_mask": closed_mask > 0, "filled_mask": filled})
    return out

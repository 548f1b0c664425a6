"""Report figures: qualitative overlays, precision-recall curves, AP vs. overlap-ratio bins.

Rendered with matplotlib's Agg backend; PNG and PDF written atomically with creation
metadata removed (and a fixed SVG hash salt) so reruns give identical files.
"""
from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402
from skimage import measure  # noqa: E402

from overlapseg.data.canonical import CATEGORY_IDS, DataError, read_image  # noqa: E402
from overlapseg.utils.io import read_json  # noqa: E402
from overlapseg.utils.plotting import save_figure  # noqa: E402,F401 - figure writers import it from here too

CATEGORY_ORDER = ("cytoplasm", "nucleus")


def _colours(n: int, palette: str = "tab20") -> np.ndarray:
    cmap = plt.get_cmap(palette)
    return np.array([cmap(i % cmap.N)[:3] for i in range(n)])


def _decode(anns: list[dict]) -> np.ndarray:
    if not anns:
        return np.zeros((0, 1, 1), dtype=bool)
    rles = []
    for a in anns:
        seg = dict(a["segmentation"])
        if isinstance(seg["counts"], str):
            seg["counts"] = seg["counts"].encode("ascii")
        rles.append(seg)
    return np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool)


def draw_instances(ax, image: np.ndarray, anns: list[dict], title: str) -> None:
    """Image with one contour colour per instance; cells' overlap regions hatched."""
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    masks = _decode(anns)
    colours = _colours(len(anns))
    for k, (a, m) in enumerate(zip(anns, masks)):
        lw = 1.2 if a["category_id"] == 1 else 0.8
        for contour in measure.find_contours(np.pad(m, 1).astype(np.uint8), 0.5):
            ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=colours[k], linewidth=lw)
    cells = masks[[a["category_id"] == 1 for a in anns]] if len(anns) else masks[:0]
    if len(cells):
        overlap = (cells.sum(axis=0) >= 2).astype(float)
        if overlap.any():
            ax.contourf(overlap, levels=[0.5, 1.5], colors="none", hatches=["////"])
            ax.contour(overlap, levels=[0.5], colors="white", linewidths=0.4)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def image_title(gt: dict, img: dict, role: str = "test") -> str:
    """``test image 3/7: train_009 (raw train subset)``: the image's role in this study's split
    first, then its raw name; a raw name that starts with another subset's name (ingest keeps
    the archive's own ``train``/``test`` file names) says so, so it is not read as a split."""
    index = [i["id"] for i in gt["images"]].index(img["id"]) + 1
    name = img["name"]
    prefix = re.match(r"(train|test|val)(?=[_\-]?\d)", name)
    raw = f" (raw {prefix.group(1)} subset)" if prefix and prefix.group(1) != role else ""
    return f"{role} image {index}/{len(gt['images'])}: {name}{raw}"


def pick_images(gt: dict, n: int) -> list[dict]:
    """The ``n`` test images with the most cell-overlap pixels (ties by name): the study's hard cases."""
    score = []
    for img in gt["images"]:
        cells = [a for a in gt["annotations"] if a["image_id"] == img["id"] and a["category_id"] == 1]
        m = _decode(cells)
        score.append((-(int((m.sum(axis=0) >= 2).sum()) if len(cells) else 0), img["name"], img))
    return [s[2] for s in sorted(score, key=lambda s: (s[0], s[1]))[:n]]


def drawn_predictions(predictions: list[dict], image_id: int, threshold: float | dict) -> list[dict]:
    """The instances of one image a figure draws: score >= the threshold of their category
    (one number, or {category name: number} as a validation-chosen threshold is stored)."""
    names = {v: k for k, v in CATEGORY_IDS.items()}

    def cut(a):
        return float(threshold[names[a["category_id"]]]) if isinstance(threshold, dict) else float(threshold)

    return sorted((a for a in predictions if a["image_id"] == image_id and a["category_id"] in names
                   and a["score"] >= cut(a)), key=lambda a: -a["score"])


def _threshold_label(threshold: float | dict) -> str:
    if isinstance(threshold, dict):
        return "score >= " + "/".join(f"{float(v):.2g}" for v in threshold.values())
    return f"score >= {float(threshold):g}"


def qualitative_figure(data_dir: str | os.PathLike, gt_json: str | os.PathLike,
                       predictions: Sequence[str | os.PathLike], experiments: Sequence[str],
                       stem: str | os.PathLike, n_images: int = 3,
                       score_threshold: float | Sequence[float | dict] = 0.5,
                       labels: Sequence[str] | None = None) -> list[Path]:
    """Rows: images; columns: image | ground truth | each model (predictions with score >=
    threshold; ``score_threshold`` one for all models or one per model, e.g. each metrics
    file's validation-chosen ``params.score_threshold``).

    Models are titled by ``labels`` (the tables' row names; default the experiment ids) and
    images by their split role and raw name (:func:`image_title`)."""
    if len(predictions) != len(experiments):
        raise ValueError(f"{len(predictions)} prediction files for {len(experiments)} experiment names")
    thresholds = (list(score_threshold) if isinstance(score_threshold, (list, tuple))
                  else [score_threshold] * len(experiments))
    if len(thresholds) != len(experiments):
        raise ValueError(f"{len(thresholds)} score thresholds for {len(experiments)} experiment names")
    gt = read_json(gt_json)
    preds = []
    for p in predictions:
        data = read_json(p)
        if not isinstance(data, list):
            raise DataError(p, "predictions must be a JSON list of COCO results")
        preds.append(data)
    chosen = pick_images(gt, n_images)
    if not chosen:
        raise DataError(gt_json, "no images to show")
    cols = 2 + len(experiments)
    fig, axes = plt.subplots(len(chosen), cols, figsize=(2.2 * cols, 2.3 * len(chosen)), squeeze=False)
    for r, img in enumerate(chosen):
        image = read_image(Path(data_dir) / "images" / img["file_name"])
        axes[r, 0].imshow(image, cmap="gray" if image.ndim == 2 else None)
        axes[r, 0].set_title(_wrap(image_title(gt, img)), fontsize=7)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        draw_instances(axes[r, 1], image, [a for a in gt["annotations"] if a["image_id"] == img["id"]],
                        "ground truth")
        for c, (name, pr, thr) in enumerate(zip(_labels(experiments, labels), preds, thresholds)):
            anns = drawn_predictions(pr, img["id"], thr)
            draw_instances(axes[r, 2 + c], image, anns, _wrap(f"{name} ({len(anns)} with {_threshold_label(thr)})"))
    fig.suptitle("Contours coloured by instance; hatched: pixels covered by two or more cells", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)


def _labels(experiments: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    """Names the figures show: the tables' row labels when given, else the experiment ids."""
    if labels is None:
        return list(experiments)
    if len(labels) != len(experiments):
        raise ValueError(f"{len(labels)} labels for {len(experiments)} experiments")
    return list(labels)


def _wrap(title: str, width: int = 30) -> str:
    """Panel titles on lines of ``width`` characters, so neighbouring titles never overlap."""
    return "\n".join(textwrap.wrap(title, width)) or title


def pr_figure(metrics: Sequence[dict], experiments: Sequence[str], stem: str | os.PathLike) -> list[Path]:
    """Precision-recall curves (COCO interpolated, mask IoU 0.5 solid, 0.75 dashed) per category;
    ``experiments`` are the names shown in the legend (pass the labels)."""
    cats = [c for c in CATEGORY_ORDER if any(c in (m.get("curves") or {}) for m in metrics)]
    if not cats:
        raise ValueError("no precision-recall curves in the metrics files")
    fig, axes = plt.subplots(1, len(cats), figsize=(4.2 * len(cats), 3.6), squeeze=False)
    colours = _colours(len(experiments), "tab10")
    for ax, cat in zip(axes[0], cats):
        for k, (m, name) in enumerate(zip(metrics, experiments)):
            curve = (m.get("curves") or {}).get(cat)
            if not curve:
                continue
            rec = np.asarray(curve["recall"])
            for key, style in (("precision@0.5", "-"), ("precision@0.75", "--")):
                prec = np.array([np.nan if v is None else v for v in curve[key]], dtype=float)
                ap = (m.get(cat) or {}).get("AP50" if key.endswith("0.5") else "AP75")
                label = f"{name} IoU {key.split('@')[1]}" + ("" if ap is None else f" (AP {100 * ap:.1f})")
                ax.plot(rec, prec, style, color=colours[k], label=label, linewidth=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(cat)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, stem)


def ap_vs_overlap_figure(metrics: Sequence[dict], experiments: Sequence[str],
                         stem: str | os.PathLike) -> list[Path]:
    """Grouped bars: mask AP per overlap-ratio bin, one panel per category (n instances in labels);
    ``experiments`` are the names shown in the legend (pass the labels)."""
    cats = [c for c in (*CATEGORY_ORDER, "mean") if any((m.get(c) or {}).get("by_overlap") for m in metrics)]
    if not cats:
        raise ValueError("no by_overlap results in the metrics files")
    fig, axes = plt.subplots(1, len(cats), figsize=(3.8 * len(cats), 3.4), squeeze=False)
    colours = _colours(len(experiments), "tab10")
    width = 0.8 / max(1, len(experiments))
    for ax, cat in zip(axes[0], cats):
        ref = next(m[cat]["by_overlap"] for m in metrics if (m.get(cat) or {}).get("by_overlap"))
        labels = list(ref)
        x = np.arange(len(labels))
        for k, (m, name) in enumerate(zip(metrics, experiments)):
            bo = (m.get(cat) or {}).get("by_overlap") or {}
            vals = [bo.get(lab, {}).get("AP") for lab in labels]
            h = [np.nan if v is None else 100 * v for v in vals]
            xs = x + (k - (len(experiments) - 1) / 2) * width
            ax.bar(xs, h, width, color=colours[k], label=name)
            for xi, v in zip(xs, vals):  # undefined (no instances in the bin) is not 0
                if v is None:
                    ax.text(xi, 1, "n/a", ha="center", va="bottom", fontsize=5, rotation=90)
        ax.set_xticks(x, [f"{lab}\nn={ref[lab]['n']}" for lab in labels], fontsize=7)
        ax.set_ylim(0, 100)
        ax.set_xlabel("overlap ratio with other cells")
        ax.set_ylabel("mask AP (%)")
        ax.set_title(cat)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, stem)


def write_figures(data_dir, gt_json, predictions, metrics_paths, experiments, out_dir, dataset: str,
                  n_images: int = 3, score_threshold: float = 0.5,
                  labels: Sequence[str] | None = None) -> list[Path]:
    """The three report figures for one dataset: {dataset}_qualitative / _pr_curves / _ap_vs_overlap.

    Models are named by ``labels`` (the tables' row names) when given, else by experiment id.
    The qualitative figure draws each model's predictions at the score threshold its metrics
    used (``params.score_threshold``, e.g. chosen on validation); ``score_threshold`` only for
    metrics files without one."""
    metrics = [read_json(p) for p in metrics_paths]
    if len(metrics) != len(experiments):
        raise ValueError(f"{len(metrics)} metrics files for {len(experiments)} experiment names")
    names = _labels(experiments, labels)
    thresholds = [(m.get("params") or {}).get("score_threshold", score_threshold) for m in metrics]
    out_dir = Path(out_dir)
    return (qualitative_figure(data_dir, gt_json, predictions, experiments, out_dir / f"{dataset}_qualitative",
                               n_images, thresholds, labels=names)
            + pr_figure(metrics, names, out_dir / f"{dataset}_pr_curves")
            + ap_vs_overlap_figure(metrics, names, out_dir / f"{dataset}_ap_vs_overlap"))

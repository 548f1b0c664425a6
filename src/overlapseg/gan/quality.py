"""Quality of generated images (issue 18): weight-free statistics that always run, and FID only
when an Inception weights file is present (never a made-up number).

* :func:`intensity_distance` - Wasserstein-1 distance between the pooled grey-level
  distributions of real and generated images (do the generated images have the real
  brightness and contrast?);
* :func:`texture_statistics` - grey-level co-occurrence (GLCM) contrast and homogeneity
  (scikit-image), averaged over an image set (do the generated images have the real texture,
  or flat areas with dark dots?);
* :func:`instance_fraction` - fraction of images holding at least one instance (blank
  generated images teach a segmentation model nothing);
* :func:`edge_alignment` - fraction of mask boundary pixels lying on strong image gradients,
  next to the chance level (do generated images keep their masks' outlines? This is what makes
  them usable training data, ``004`` Sec. II-C, Fig. 3f);
* :func:`overlap_density_ratio` - mean optical density where cells overlap over that of single
  cells (a real overlap absorbs about what its cells absorb together: well above 1; about 1
  means a generator draws overlaps like single cells, the copy-paste + pix2pix failure of
  issue 28);
* :func:`fid` - Frechet Inception Distance (thesis Sec. 5.6 tracked it during training) with
  pytorch-fid or torch-fidelity and a local weights file, else ``(None, "not computed: ...")``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, stats

from overlapseg.gan.pix2pix import image_to_unit, instance_boundaries


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) / (H, W, C) uint or [0, 1] float image -> float64 (H, W) in [0, 1]."""
    return np.clip(image_to_unit(np.asarray(image)).mean(axis=0), 0.0, 1.0).astype(np.float64)


def intensity_distance(real_images: Sequence[np.ndarray], fake_images: Sequence[np.ndarray],
                       bins: int = 256) -> float:
    """Wasserstein-1 distance (scipy) between the grey-level histograms (``bins`` on [0, 1])
    pooled over each image set; 0 for identical distributions, at most 1. Both sets are scaled
    by their dtype maximum, so compare sets of the same dtype."""
    if not len(real_images) or not len(fake_images):
        raise ValueError("intensity_distance needs at least one real and one generated image")
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2.0

    def histogram(images) -> np.ndarray:
        return sum(np.histogram(_grey(im), bins=edges)[0] for im in images).astype(np.float64)

    return float(stats.wasserstein_distance(centres, centres, histogram(real_images),
                                            histogram(fake_images)))


def texture_statistics(images: Sequence[np.ndarray], levels: int = 32,
                       distances: Sequence[int] = (1, 2)) -> dict[str, float]:
    """Mean GLCM ``contrast`` and ``homogeneity`` (:func:`skimage.feature.graycoprops`) over an
    image set: grey levels quantised to ``levels``, co-occurrences at ``distances`` px in four
    directions (0, 45, 90, 135 degrees), symmetric and normalised, averaged over distances and
    directions. Contrast grows with fine texture and sharp edges, homogeneity with smooth areas;
    compare a generated set with the real one (same ``levels``)."""
    from skimage.feature import graycomatrix, graycoprops

    if not len(images):
        raise ValueError("texture_statistics needs at least one image")
    if levels < 2 or not distances or min(distances) < 1:
        raise ValueError(f"texture_statistics needs levels >= 2 and distances >= 1, got {levels}, {distances}")
    angles = [0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    contrast, homogeneity = [], []
    for im in images:
        grey = np.minimum((_grey(im) * levels).astype(np.uint8), levels - 1)
        glcm = graycomatrix(grey, list(distances), angles, levels=levels, symmetric=True, normed=True)
        contrast.append(float(graycoprops(glcm, "contrast").mean()))
        homogeneity.append(float(graycoprops(glcm, "homogeneity").mean()))
    return {"glcm_contrast": float(np.mean(contrast)), "glcm_homogeneity": float(np.mean(homogeneity))}


def instance_fraction(instance_counts: Sequence[int]) -> float:
    """Fraction of images with at least one instance, from each image's instance count."""
    if not len(instance_counts):
        raise ValueError("instance_fraction needs at least one image")
    return float(np.mean([int(c) > 0 for c in instance_counts]))


def overlap_density_ratio(images: Sequence[np.ndarray], cell_masks: Sequence[np.ndarray],
                          min_pixels: int = 50) -> float | None:
    """Pooled mean optical density of pixels covered by two or more cells over that of pixels
    covered by exactly one (``cell_masks``: per image an (N, H, W) stack of cell masks).

    OD = -ln(I / I0), with I0 the median grey level of the image's uncovered pixels (its
    background). Images lacking ``min_pixels`` of either region or of background are skipped;
    None when none is left (a set without overlaps has no such ratio)."""
    sums = np.zeros(2)
    counts = np.zeros(2)
    for image, masks in zip(images, cell_masks):
        grey = _grey(image)
        cover = np.asarray(masks, bool).sum(axis=0) if len(masks) else np.zeros(grey.shape, int)
        single, overlap, background = cover == 1, cover >= 2, cover == 0
        if min(single.sum(), overlap.sum(), background.sum()) < min_pixels:
            continue
        od = -np.log(np.clip(grey, 1e-3, None) / max(float(np.median(grey[background])), 1e-3))
        for k, region in enumerate((single, overlap)):
            sums[k] += od[region].sum()
            counts[k] += region.sum()
    if not counts.all() or sums[0] <= 0:
        return None
    return float((sums[1] / counts[1]) / (sums[0] / counts[0]))


def edge_alignment(image: np.ndarray, masks: np.ndarray, tolerance: int = 1,
                   percentile: float = 80.0, sigma: float = 1.0) -> dict[str, float | None]:
    """How well an image's edges follow its instance masks.

    Gradient magnitude of the Gaussian-smoothed grey image (``sigma``); "strong" = at or above
    its ``percentile``, widened by ``tolerance`` px. Returns ``alignment`` (fraction of the
    masks' 1-px inner boundary pixels that are strong), ``chance`` (fraction of all pixels that
    are strong - what unrelated masks would score) and ``n_boundary``; ``alignment`` is None
    (undefined, and a valid JSON value unlike NaN) when the masks have no boundary pixel, e.g.
    no masks or one mask covering the whole image.
    """
    grey = _grey(image)
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[1:] != grey.shape:
        raise ValueError(f"masks must be (N, H, W) matching the image {grey.shape}, got {masks.shape}")
    if not 0 < percentile < 100 or tolerance < 0 or sigma <= 0:
        raise ValueError("edge_alignment needs 0 < percentile < 100, tolerance >= 0, sigma > 0")
    gradient = ndimage.gaussian_gradient_magnitude(grey, sigma)
    strong = gradient >= np.percentile(gradient, percentile)
    if tolerance:
        strong = ndimage.binary_dilation(strong, iterations=tolerance)
    boundary = instance_boundaries(masks, 1) if len(masks) else np.zeros(grey.shape, bool)
    n = int(boundary.sum())
    return {"alignment": float(strong[boundary].mean()) if n else None,
            "chance": float(strong.mean()), "n_boundary": n}


def mean_edge_alignment(images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                        **kwargs) -> dict[str, float | None]:
    """Boundary-pixel-weighted :func:`edge_alignment` over an image set (alignment None when
    no image has a mask boundary)."""
    if len(images) != len(masks) or not len(images):
        raise ValueError("mean_edge_alignment needs equally many (>= 1) images and mask stacks")
    parts = [edge_alignment(im, m, **kwargs) for im, m in zip(images, masks)]
    n = sum(p["n_boundary"] for p in parts)
    aligned = sum(p["alignment"] * p["n_boundary"] for p in parts if p["n_boundary"])
    return {"alignment": aligned / n if n else None,
            "chance": float(np.mean([p["chance"] for p in parts])), "n_boundary": n}


# ----------------------------------------------------------------------------- FID
def _rgb_batch(images: Sequence[np.ndarray], size: int = 299) -> torch.Tensor:
    """Images -> float (N, 3, size, size) in [0, 1] (grey repeated; bilinear resize)."""
    out = []
    for im in images:
        unit = torch.from_numpy(image_to_unit(np.asarray(im)))
        if unit.shape[0] == 1:
            unit = unit.repeat(3, 1, 1)
        elif unit.shape[0] != 3:
            raise ValueError(f"FID needs grey or RGB images, got {unit.shape[0]} channels")
        out.append(F.interpolate(unit[None], size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(out)


def _fid_pytorch_fid(real: torch.Tensor, fake: torch.Tensor, weights: Path) -> float:
    import pytorch_fid.inception as inception
    from pytorch_fid.fid_score import calculate_frechet_distance

    state = torch.load(weights, map_location="cpu")
    # the package downloads its weights by URL; hand it the local file instead
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: state):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    @torch.no_grad()
    def statistics(batch: torch.Tensor):
        feats = torch.cat([model(batch[i:i + 16])[0].flatten(1) for i in range(0, len(batch), 16)])
        feats = feats.double().numpy()
        return feats.mean(axis=0), np.cov(feats, rowvar=False)

    return float(calculate_frechet_distance(*statistics(real), *statistics(fake)))


def _fid_torch_fidelity(real: torch.Tensor, fake: torch.Tensor, weights: Path) -> float:
    import torch_fidelity

    class _Images(torch.utils.data.Dataset):
        def __init__(self, batch: torch.Tensor):
            self.batch = (batch * 255).round().to(torch.uint8)

        def __len__(self) -> int:
            return len(self.batch)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.batch[i]

    metrics = torch_fidelity.calculate_metrics(
        input1=_Images(fake), input2=_Images(real), fid=True, cuda=False, verbose=False,
        feature_extractor_weights_path=str(weights))
    return float(metrics["frechet_inception_distance"])


def fid(real: Sequence[np.ndarray], fake: Sequence[np.ndarray],
        weights_path: str | os.PathLike | None) -> tuple[float | None, str]:
    """``(value, note)``: FID of ``fake`` against ``real`` when pytorch-fid or torch-fidelity is
    importable and ``weights_path`` (their Inception weights file, kept under
    ``resources/weights/``) exists; otherwise ``(None, "not computed: <reason>")``. Nothing is
    downloaded. With few images FID is strongly biased upwards; the note gives the counts."""
    weights = Path(weights_path) if weights_path else None
    if weights is None or not weights.is_file():
        return None, f"not computed: Inception weights file {weights_path!s} not present"
    if len(real) < 2 or len(fake) < 2:
        return None, f"not computed: needs >= 2 images per set (real {len(real)}, generated {len(fake)})"
    backends = [(name, fn) for name, fn in (("pytorch_fid", _fid_pytorch_fid),
                                            ("torch_fidelity", _fid_torch_fidelity))
                if importlib.util.find_spec(name) is not None]
    if not backends:
        return None, "not computed: neither pytorch-fid nor torch-fidelity is installed"
    real_batch, fake_batch = _rgb_batch(real), _rgb_batch(fake)
    errors = []
    for name, fn in backends:
        try:
            value = fn(real_batch, fake_batch, weights)
        except Exception as exc:  # a weights file of the other package, a version mismatch...
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        return value, f"{name}, weights {weights.name}, real {len(real)}, generated {len(fake)} images"
    return None, "not computed: " + "; ".join(errors)

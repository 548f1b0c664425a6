"""Instances from semantic predictions by marker-controlled watershed ("SEU-Net + wtshd").

Brightfield thesis Sec. 4 (intro) and Table 5.7: cells are separated with the watershed
transform using the predicted cytoplasm and nuclei; the thesis applies it to the 4-head SEU-Net
(Sec. 5.7: "four decoupled outputting branches"), whose border head enters the relief. Here:

* foreground = cytoplasm probability >= threshold;
* markers = connected components of the predicted nucleus mask (inside the foreground),
  or, without a nucleus head, the maxima of the foreground's Euclidean distance transform;
* flooding relief = ``1 - p_cytoplasm`` (plus ``p_border`` when a border head exists) plus
  ``distance_weight`` x the distance to the nearest marker (normalised to [0, 1]), so basins
  meet along low-confidence cytoplasm and predicted borders, and otherwise halfway between
  markers. Without the distance term the relief inside confident cytoplasm is nearly flat
  and tiny probability differences (1e-3) decide the flooding order, which lets one marker
  flood a whole clump;
* foreground components that contain no marker become one instance each.

A watershed is a partition: every pixel gets at most one label, so these instances can
never overlap. That is the point of comparing this row with the amodal Mask R-CNN rows.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from overlapseg.data.canonical import encode_mask, mask_bbox

_CONN = ndi.generate_binary_structure(2, 1)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1 or labels.max() == 0:
        return labels
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    relabel = np.zeros(len(sizes), dtype=np.int32)
    relabel[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return relabel[labels]


def nucleus_instances(nucleus_prob: np.ndarray, threshold: float = 0.5,
                      min_size: int = 10) -> np.ndarray:
    """Label image of nucleus instances: connected components of the thresholded prediction."""
    labels, _ = ndi.label(nucleus_prob >= threshold, structure=_CONN)
    return _remove_small(labels.astype(np.int32), min_size)


def distance_markers(foreground: np.ndarray, min_distance: int = 10) -> np.ndarray:
    """Markers at the maxima of the distance transform (used when no nuclei are predicted)."""
    dist = ndi.distance_transform_edt(foreground)
    lab, _ = ndi.label(foreground, structure=_CONN)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=lab, exclude_border=False)
    markers = np.zeros(foreground.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # merge peaks that touch (plateaus) into one marker
    grown, _ = ndi.label(ndi.binary_dilation(markers > 0, _CONN) & foreground, structure=_CONN)
    return np.where(markers > 0, grown, 0).astype(np.int32)


def watershed_cells(cyto_prob: np.ndarray, nucleus_prob: np.ndarray | None = None,
                    border_prob: np.ndarray | None = None, threshold: float = 0.5,
                    nucleus_threshold: float = 0.5, min_size: int = 50,
                    min_nucleus_size: int = 10, min_distance: int = 10,
                    distance_weight: float = 0.5) -> np.ndarray:
    """Label image (int32, 0 = background) of cell instances; see the module docstring."""
    cyto_prob = np.asarray(cyto_prob, dtype=np.float32)
    foreground = cyto_prob >= threshold
    if nucleus_prob is not None:
        markers = nucleus_instances(nucleus_prob, nucleus_threshold, min_nucleus_size)
        markers[~foreground] = 0
    else:
        markers = distance_markers(foreground, min_distance)
    relief = 1.0 - cyto_prob
    if border_prob is not None:
        relief = relief + np.asarray(border_prob, dtype=np.float32)
    if distance_weight and markers.any():
        to_marker = ndi.distance_transform_edt(markers == 0)
        relief = relief + distance_weight * (to_marker / max(float(to_marker[foreground].max()), 1.0))
    labels = watershed(relief, markers=markers, mask=foreground, connectivity=1)
    # foreground pieces no marker reached: one instance each
    unseeded, n = ndi.label(foreground & (labels == 0), structure=_CONN)
    if n:
        labels = np.where(unseeded > 0, unseeded + labels.max(), labels)
    # marker components that ended up split or tiny are cleaned by size
    return _remove_small(labels.astype(np.int32), min_size)


def labels_to_coco(labels: np.ndarray, prob: np.ndarray, image_id: int,
                   category_id: int) -> list[dict]:
    """COCO results for each label > 0; score = mean probability inside the instance."""
    n = int(labels.max())
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    scores = ndi.mean(np.asarray(prob, dtype=np.float64), labels=labels, index=idx)
    objects = ndi.find_objects(labels)
    results = []
    for k, sl in zip(idx, objects):
        if sl is None:
            continue
        mask = np.zeros(labels.shape, dtype=bool)
        mask[sl] = labels[sl] == k
        results.append({"image_id": int(image_id), "category_id": int(category_id),
                        "segmentation": encode_mask(mask), "bbox": mask_bbox(mask),
                        "score": float(scores[k - 1])})
    return results

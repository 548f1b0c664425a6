import numpy as np
import pytest
from scipy import ndimage as ndi

from overlapseg.data.canonical import decode_segmentation
from overlapseg.models.watershed import (distance_markers, labels_to_coco, nucleus_instances,
                                         watershed_cells)


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture
def two_touching():
    shape = (64, 96)
    a, b = disc(shape, 32, 30, 18), disc(shape, 32, 64, 18)  # centres 34 apart, radii 18: touch
    assert (a & b).any()
    prob = np.where(a | b, 0.9, 0.05).astype(np.float32)
    nuc = (disc(shape, 32, 30, 4) | disc(shape, 32, 64, 4)).astype(np.float32)
    return a, b, prob, nuc


def _match(labels, mask):
    """Fraction of ``mask`` covered by its most common label, and that label."""
    vals, counts = np.unique(labels[mask & (labels > 0)], return_counts=True)
    k = counts.argmax()
    return counts[k] / mask.sum(), vals[k]


def test_watershed_splits_touching_discs_seeded_by_two_markers(two_touching):
    a, b, prob, nuc = two_touching
    labels = watershed_cells(prob, nuc, min_size=10)
    assert labels.max() == 2
    cover_a, la = _match(labels, a & ~b)
    cover_b, lb = _match(labels, b & ~a)
    assert la != lb
    assert cover_a > 0.95 and cover_b > 0.95
    # the split runs through the contact zone: every pixel of the union is labelled
    assert ((labels > 0) == (a | b)).all()


def test_watershed_without_nuclei_uses_distance_maxima(two_touching):
    a, b, prob, _ = two_touching
    markers = distance_markers(prob >= 0.5, min_distance=10)
    assert len(np.unique(markers[markers > 0])) == 2
    labels = watershed_cells(prob, None, min_size=10, min_distance=10)
    assert labels.max() == 2
    assert _match(labels, a & ~b)[1] != _match(labels, b & ~a)[1]


def test_border_probability_steers_the_split():
    shape = (40, 80)
    prob = np.zeros(shape, np.float32)
    prob[5:35, 5:75] = 0.9                           # one rectangle of foreground
    nuc = np.zeros(shape, np.float32)
    nuc[18:22, 10:14] = 1
    nuc[18:22, 66:70] = 1
    border = np.zeros(shape, np.float32)
    border[:, 25] = 1.0                              # predicted border left of centre
    labels = watershed_cells(prob, nuc, border, min_size=10)
    left = labels[20, 12]
    assert labels[20, 20] == left and labels[20, 30] != left


def test_unseeded_foreground_becomes_its_own_instance(two_touching):
    a, b, prob, nuc = two_touching
    prob = prob.copy()
    lone = disc(prob.shape, 8, 88, 6)
    prob[lone] = 0.9
    labels = watershed_cells(prob, nuc, min_size=10)
    assert labels.max() == 3
    assert len(np.unique(labels[lone])) == 1 and labels[8, 88] > 0


def test_watershed_instances_never_overlap(two_touching):
    a, b, prob, nuc = two_touching
    labels = watershed_cells(prob, nuc, min_size=10)
    results = labels_to_coco(labels, prob, image_id=7, category_id=1)
    masks = np.stack([decode_segmentation(r["segmentation"], *prob.shape) for r in results])
    assert masks.sum(axis=0).max() == 1  # a partition: the GT overlap a & b cannot be recovered
    assert (a & b).sum() > 0


def test_labels_to_coco_scores_are_mean_probability():
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 1
    labels[5:9, 5:9] = 2
    prob = np.zeros((10, 10), np.float32)
    prob[1:3, 1:3] = [[0.2, 0.4], [0.6, 0.8]]
    prob[5:9, 5:9] = 1.0
    res = labels_to_coco(labels, prob, image_id=3, category_id=2)
    assert [r["category_id"] for r in res] == [2, 2] and {r["image_id"] for r in res} == {3}
    assert res[0]["score"] == pytest.approx(0.5)
    assert res[1]["score"] == pytest.approx(1.0)
    np.testing.assert_array_equal(decode_segmentation(res[0]["segmentation"], 10, 10), labels == 1)
    assert res[1]["bbox"] == [5.0, 5.0, 4.0, 4.0]
    assert labels_to_coco(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, 1) == []


def test_nucleus_instances_are_components_above_min_size():
    p = np.zeros((20, 20), np.float32)
    p[2:6, 2:6] = 0.9
    p[10:15, 10:15] = 0.7
    p[18, 18] = 0.9                                  # a speck
    labels = nucleus_instances(p, threshold=0.5, min_size=4)
    assert labels.max() == 2
    assert ndi.label(labels > 0)[1] == 2


def test_confident_plateau_splits_halfway_between_markers():
    """Near-flat cytoplasm probability must not let one marker flood the whole clump."""
    rng = np.random.default_rng(0)
    prob = np.zeros((40, 80), np.float32)
    prob[5:35, 5:75] = 1.0 - rng.uniform(0, 1e-3, (30, 70)).astype(np.float32)
    nuclei = np.zeros_like(prob)
    nuclei[18:22, 14:18] = 1.0  # markers centred at x = 16 and x = 64
    nuclei[18:22, 62:66] = 1.0
    labels = watershed_cells(prob, nuclei, min_size=1, min_nucleus_size=1)
    left, right = labels[20, 16], labels[20, 64]
    assert left != right and left > 0 and right > 0
    # the boundary sits at the midpoint x = 40 (+-2 px) along every row of the clump
    for row in range(5, 35):
        boundary = np.nonzero(labels[row] == right)[0].min()
        assert abs(boundary - 40) <= 2, (row, boundary)


def test_four_head_predictions_put_the_border_head_into_the_watershed():
    """The trainer's instance path (thesis Table 5.7 "SEU-Net + watershed", 4-head model): the
    border head's probabilities steer the split; a 2-head model splits halfway."""
    from overlapseg.models.seunet import head_names
    from overlapseg.train.seunet import SEUNET_DEFAULTS, instances_from_probabilities
    shape = (40, 80)
    cyto = np.zeros(shape, np.float32)
    cyto[5:35, 5:75] = 0.9
    nuc = np.zeros(shape, np.float32)
    nuc[18:22, 10:14] = 1
    nuc[18:22, 66:70] = 1
    border = np.zeros(shape, np.float32)
    border[:, 25] = 1.0
    planes = {"cytoplasm": cyto, "nucleus": nuc, "border": border, "background": 1 - cyto}
    params = {**SEUNET_DEFAULTS, "watershed": {**SEUNET_DEFAULTS["watershed"], "min_size": 10}}

    def cell_at(results, y, x):
        cells = [decode_segmentation(r["segmentation"], *shape) for r in results if r["category_id"] == 1]
        return next(k for k, m in enumerate(cells) if m[y, x])

    four = instances_from_probabilities({h: planes[h] for h in head_names("4-head")}, 1, params)
    two = instances_from_probabilities({h: planes[h] for h in head_names("2-head")}, 1, params)
    assert cell_at(four, 20, 20) == cell_at(four, 20, 12) != cell_at(four, 20, 30)
    assert cell_at(two, 20, 30) == cell_at(two, 20, 12)       # no border: split near x = 40

"""Keypoint detection (KD) of the CC framework: targets, Hough voting, box grouping, DIoU-NMS.

Paper: "Synthetic-to-real: instance segmentation of clinical cluster cells with unlabeled
synthetic training", Sec. 2.2 (KD), after Yi et al. 2019 (keypoint-graph boxes) and
PersonLab (Papandreou et al. 2018) for the Hough score map.

Conventions (all decisions where the paper is silent):

* Five keypoint types per instance box: the corners and the centre. Corners sit on the
  extreme *pixels* of the box (``x1 - 1``/``y1 - 1`` for torchvision's exclusive right and
  bottom edges), so a cell cut by the image border keeps its corners inside the feature grid.
* Positions are in cells of the map's stride ``n``; a keypoint at image position ``y`` sits
  at ``y / n`` and its disc of radius ``r`` is centred on ``floor(y / n)`` (Sec. 2.2.1).
* Offsets point from every disc cell ``x`` to the exact keypoint, ``O(x) = y / n - x``; on
  the disc centre this is the paper's sub-pixel remainder ``y/n - floor(y/n)`` (Eq. 1), and
  on the other disc cells it makes each cell's Hough vote (Eq. 2) land on the keypoint.
  Displacements ``D_{k,l}(x) = y_l / n - x`` are the paper's Eq. 3 in cells.
* Where discs of two instances overlap in one channel, a cell belongs to the nearest keypoint
  (first instance on ties), so the regression targets stay single-valued.
* Heatmaps, offsets and displacements come in one set per class (cytoplasm, nucleus): a
  nucleus shares its cell's centre, so class-agnostic fields would collide exactly there.
* Decoding reads a field by bilinear sampling at the keypoint, clamped into the grid; on
  exact (target) maps this recovers the boxes exactly when ``radius >= 2`` (the four cells
  around a keypoint then all lie in its disc).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, distance_box_iou

KEYPOINT_TYPES = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")
NUM_TYPES = len(KEYPOINT_TYPES)
# 20 directed pairs (k, l): the paper's 10 keypoint pairs in both directions (Sec. 2.2.2)
PAIRS = tuple((k, l) for k in range(NUM_TYPES) for l in range(NUM_TYPES) if k != l)
PAIR_INDEX = {pair: j for j, pair in enumerate(PAIRS)}
CANVAS_MARGIN = 2  # cells of vote canvas beyond each side of the map


def box_keypoints(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy boxes -> (N, 5, 2) keypoint positions (x, y) in the order of KEYPOINT_TYPES."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    x0, y0, x1, y1 = boxes.unbind(1)
    right, bottom = x1 - 1, y1 - 1
    points = [(x0, y0), (right, y0), (x0, bottom), (right, bottom),
              ((x0 + right) / 2, (y0 + bottom) / 2)]
    return torch.stack([torch.stack(p, 1) for p in points], 1)


def keypoints_to_boxes(points: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes from any consistent subset of the five keypoints (inverse of :func:`box_keypoints`).

    ``points`` (G, 5, 2) image positions, ``present`` (G, 5) bool. Each box side is the mean
    of its estimates (a corner on that side, or the centre reflected through the opposite
    corner); a box is valid when every side has one, i.e. for any three keypoints or two on a
    diagonal (corner pairs or corner + centre), as the paper's 2-5 keypoint rule (Sec. 2.2.2).
    Returns (G, 4) boxes and (G,) validity.
    """
    tl, tr, bl, br, c = range(NUM_TYPES)
    px, py = points[..., 0], points[..., 1]
    # (side coordinate, keypoint types giving it directly, corners reflected through the centre)
    sides = [(px, (tl, bl), (tr, br)), (py, (tl, tr), (bl, br)),
             (px, (tr, br), (tl, bl)), (py, (bl, br), (tl, tr))]
    out, valid = [], torch.ones(len(points), dtype=torch.bool, device=points.device)
    for coord, direct, opposite in sides:
        total = torch.zeros_like(coord[:, 0])
        count = torch.zeros_like(total)
        for t in direct:
            total = total + torch.where(present[:, t], coord[:, t], 0)
            count = count + present[:, t]
        for t in opposite:
            both = present[:, t] & present[:, c]
            total = total + torch.where(both, 2 * coord[:, c] - coord[:, t], 0)
            count = count + both
        valid &= count > 0
        out.append(total / count.clamp_min(1))
    x0, y0, right, bottom = out
    boxes = torch.stack([x0, y0, right + 1, bottom + 1], 1)
    return boxes, valid & (right >= x0) & (bottom >= y0)


def keypoint_targets(boxes: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     grid: tuple[int, int], stride: int, radius: float) -> dict[str, torch.Tensor]:
    """KD training targets on a (Hc, Wc) grid of ``stride`` px cells (Sec. 2.2.1-2.2.2).

    Returns ``heatmap`` (C, 5, Hc, Wc) 0/1 discs of ``radius`` cells, ``offset`` (C, 5, 2, Hc, Wc)
    and ``displacement`` (C, 20, 2, Hc, Wc) vectors (x, y) in cells, zero outside the discs
    (the heatmap, and for pair (k, l) the disc of k, is the L1 weight), and ``gaussian``
    (C, 5, Hc, Wc): the largest exp(-d^2 / (2 radius^2)) over the keypoints of each channel, d
    the distance in cells to the exact keypoint (the focal loss' penalty reduction).
    """
    if labels.shape != boxes.shape[:1]:
        raise ValueError(f"{len(boxes)} boxes but labels of shape {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f"labels must lie in 1..{num_classes}, got {labels.unique().tolist()}")
    hc, wc = grid
    heatmap = boxes.new_zeros(num_classes, NUM_TYPES, hc, wc)
    offset = boxes.new_zeros(num_classes, NUM_TYPES, 2, hc, wc)
    displacement = boxes.new_zeros(num_classes, len(PAIRS), 2, hc, wc)
    gaussian = boxes.new_zeros(num_classes, NUM_TYPES, hc, wc)
    gy, gx = torch.meshgrid(torch.arange(hc, device=boxes.device, dtype=boxes.dtype),
                            torch.arange(wc, device=boxes.device, dtype=boxes.dtype), indexing="ij")
    cells = torch.stack([gx, gy], -1)  # (Hc, Wc, 2)
    for c in range(num_classes):
        points = box_keypoints(boxes[labels == c + 1]) / stride  # (n, 5, 2)
        if not len(points):
            continue
        rel = cells - points[:, :, None, None, :]  # (n, 5, Hc, Wc, 2)
        to_centre = (cells - points.floor()[:, :, None, None, :]).square().sum(-1)
        inside = to_centre <= radius * radius
        nearest = torch.where(inside, rel.square().sum(-1), math.inf).argmin(0)  # (5, Hc, Wc)
        hit = inside.any(0)
        owner_points = points[nearest]  # (5, Hc, Wc, 5, 2): all keypoints of each cell's owner
        vectors = (owner_points - cells[None, :, :, None, :]) * hit[..., None, None]
        heatmap[c] = hit.to(boxes.dtype)
        gaussian[c] = torch.exp(-rel.square().sum(-1) / (2 * radius * radius)).amax(0)
        offset[c] = torch.stack([vectors[t, :, :, t] for t in range(NUM_TYPES)]).permute(0, 3, 1, 2)
        displacement[c] = torch.stack([vectors[k, :, :, l] for k, l in PAIRS]).permute(0, 3, 1, 2)
    return {"heatmap": heatmap, "offset": offset, "displacement": displacement, "gaussian": gaussian}


def hough_score_map(heatmap: torch.Tensor, offset: torch.Tensor,
                    radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint score map h'(x) by Hough voting (Sec. 2.2.1, Eq. 2; PersonLab's vote maps).

    Every cell casts its heatmap probability at ``x + O(x)``, split over the four nearest
    cells by the bilinear kernel, onto a canvas with ``CANVAS_MARGIN`` extra cells per side
    (keypoints on the image border vote just outside the grid). One keypoint's votes thus
    fill one 2x2 block of cells, so the map is read per block: ``score`` is the vote mass of
    each 2x2 block divided by pi r^2 (about 1 for a full disc of certain, exact votes) and
    ``position`` the mean vote target in it, a sub-cell keypoint estimate. Blocks rather than
    larger windows keep same-type keypoints two cells apart from pooling their votes.

    ``heatmap`` (K, H, W) probabilities, ``offset`` (K, 2, H, W) in cells. Returns ``score``
    (K, H + 2m - 1, W + 2m - 1), block (i, j) covering canvas cells i..i+1, j..j+1, and
    ``position`` (K, 2, ...) in grid cells (margin removed).
    """
    if heatmap.ndim != 3 or offset.shape != (heatmap.shape[0], 2, *heatmap.shape[1:]):
        raise ValueError(f"heatmap (K, H, W) and offset (K, 2, H, W) expected, got "
                         f"{tuple(heatmap.shape)} and {tuple(offset.shape)}")
    k, h, w = heatmap.shape
    m = CANVAS_MARGIN
    hp, wp = h + 2 * m, w + 2 * m
    gy, gx = torch.meshgrid(torch.arange(h, device=heatmap.device, dtype=heatmap.dtype),
                            torch.arange(w, device=heatmap.device, dtype=heatmap.dtype), indexing="ij")
    tx, ty = gx + offset[:, 0], gy + offset[:, 1]
    on_canvas = (tx >= -m) & (tx <= w - 1 + m) & (ty >= -m) & (ty <= h - 1 + m)
    tx, ty = tx.clamp(-m, w - 1 + m), ty.clamp(-m, h - 1 + m)
    x0, y0 = (tx + m).floor(), (ty + m).floor()
    fx, fy = tx + m - x0, ty + m - y0
    mass, sum_x, sum_y = (heatmap.new_zeros(k, hp * wp) for _ in range(3))
    votes = heatmap * on_canvas
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        weight = votes * (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        index = ((y0 + dy).clamp(max=hp - 1) * wp + (x0 + dx).clamp(max=wp - 1)).long().flatten(1)
        mass.scatter_add_(1, index, weight.flatten(1))
        sum_x.scatter_add_(1, index, (weight * tx).flatten(1))
        sum_y.scatter_add_(1, index, (weight * ty).flatten(1))
    block = [F.avg_pool2d(a.view(k, hp, wp), 2, 1) for a in (mass, sum_x, sum_y)]
    score = block[0] * (4 / (math.pi * radius * radius))
    position = torch.stack(block[1:], 1) / block[0].clamp_min(1e-12)[:, None]
    return score, position


def extract_keypoints(score: torch.Tensor, position: torch.Tensor, threshold: float,
                      max_keypoints: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local maxima of the block score map above ``threshold`` (drops interference points, Sec. 2.2.1).

    Maxima of one channel closer than one cell in both axes are one keypoint (a vote landing
    on a cell centre fills four tied blocks); they are merged by NMS on unit squares.
    Returns channel (M,), position (M, 2) in cells and score (M,) clipped to 1, best first.
    """
    peak = (score == F.max_pool2d(score, 3, 1, 1)) & (score > threshold)
    channel, yy, xx = peak.nonzero(as_tuple=True)
    value = score[channel, yy, xx]
    xy = position[channel, :, yy, xx]
    keep = batched_nms(torch.cat([xy - 0.5, xy + 0.5], 1), value, channel, 0.0)[:max_keypoints]
    return channel[keep], xy[keep], value[keep].clamp(max=1.0)


def sample_fields(fields: torch.Tensor, xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples of ``fields`` (Ch, H, W) at ``xy`` (M, 2) cells clamped into the grid.

    Returns (M, Ch) values and the clamped positions (M, 2) they were read at.
    """
    h, w = fields.shape[-2:]
    at = torch.stack([xy[:, 0].clamp(0, w - 1), xy[:, 1].clamp(0, h - 1)], 1)
    grid = torch.stack([2 * at[:, 0] / max(w - 1, 1) - 1, 2 * at[:, 1] / max(h - 1, 1) - 1], 1)
    values = F.grid_sample(fields[None], grid.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
    return values[0, :, 0].T, at


def group_keypoints(xy: np.ndarray, types: np.ndarray, classes: np.ndarray, scores: np.ndarray,
                    partners: np.ndarray, tolerance: float) -> np.ndarray:
    """Greedy keypoint grouping by mutual displacement (Sec. 2.2.2, Eq. 3).

    Keypoints are visited by decreasing score; an unassigned one seeds a group, which then
    grows breadth-first: for each member and each missing type, the unassigned keypoint of
    that type and class nearest to the member's predicted partner position (within
    ``tolerance`` cells) joins if its own displacement points back to the member (within
    ``tolerance``). ``partners`` (M, 5, 2): predicted partner positions per keypoint.
    Returns (G, 5) keypoint indices per group, -1 where a type is missing.
    """
    assigned = np.zeros(len(xy), bool)
    groups = []
    for seed in np.argsort(-scores, kind="stable"):
        if assigned[seed]:
            continue
        assigned[seed] = True
        members = np.full(NUM_TYPES, -1)
        members[types[seed]] = seed
        queue = [seed]
        while queue:
            m = queue.pop(0)
            for t in range(NUM_TYPES):
                if members[t] >= 0:
                    continue
                candidates = np.flatnonzero(~assigned & (types == t) & (classes == classes[m]))
                distance = np.linalg.norm(xy[candidates] - partners[m, t], axis=1)
                for i in np.argsort(distance, kind="stable"):
                    if distance[i] > tolerance:
                        break
                    c = candidates[i]
                    if np.linalg.norm(partners[c, types[m]] - xy[m]) <= tolerance:
                        members[t] = c
                        assigned[c] = True
                        queue.append(c)
                        break
        groups.append(members)
    return np.asarray(groups, np.int64).reshape(-1, NUM_TYPES)


def diou_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
             threshold: float) -> torch.Tensor:
    """Greedy per-class NMS on DIoU (IoU minus normalised centre distance; Zheng et al. 2020).

    The paper (Sec. 2.2.2, 3.2) removes duplicate boxes with DIoU-NMS at 0.5: a box is dropped
    when its DIoU with a better-scoring kept box of the same class exceeds ``threshold``.
    Returns the kept indices, best first.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"DIoU-NMS threshold must lie in [0, 1], got {threshold}")
    order = torch.argsort(scores, descending=True, stable=True)
    ordered = boxes[order]
    suppress = ((distance_box_iou(ordered, ordered) > threshold)
                & (labels[order][:, None] == labels[order][None])).cpu().numpy()
    keep = np.ones(len(order), bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~suppress[i, i + 1:]
    return order[torch.from_numpy(keep).to(order.device)]


def complete_groups(groups: torch.Tensor, partners: torch.Tensor, xy: torch.Tensor,
                    present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints a group lacks, placed where its members' displacements point (mean over members).

    ``groups`` (G, 5) keypoint indices (-1 missing), ``partners`` (M, 5, 2) predicted partner
    positions per keypoint, ``xy`` (M, 2) keypoint positions, ``present`` (G, 5). Returns the
    completed (G, 5, 2) positions and the (G, 5) mask of types known afterwards (a type no
    member predicts stays missing).
    """
    member = groups.clamp(min=0)
    predicted = partners[member]  # (G, 5 members, 5 types, 2); NaN: a keypoint's own type
    usable = torch.isfinite(predicted) & present[:, :, None, None]
    count = usable.sum(1)
    estimate = torch.where(usable, predicted, 0).sum(1) / count.clamp_min(1)
    known = present | (count[..., 0] > 0)
    points = torch.where(present[..., None], xy[member], estimate)
    return points, known


def decode_boxes(heatmap: torch.Tensor, offset: torch.Tensor, displacement: torch.Tensor,
                 stride: int, radius: float, threshold: float, tolerance: float,
                 max_keypoints: int, complete: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """KD maps of one image -> candidate boxes (image px), scores and labels (1-based), before NMS.

    ``heatmap`` (C, 5, H, W) probabilities, ``offset`` (C, 5, 2, H, W) and ``displacement``
    (C, 20, 2, H, W) in cells. A box's score is the mean, over its five implied keypoints, of
    the score of the block holding each (clipped to [0, 1]): boxes whose grouping missed a keypoint that the
    map still supports keep a high score, boxes with unsupported corners are ranked down.

    ``complete=False`` is the paper's rule: a box needs 2-5 consistent detected keypoints.
    ``complete=True`` also boxes a group the rule rejects (a lone keypoint, or two on one
    side) from where its members' displacements place the missing keypoints
    (:func:`complete_groups`). Cytoplasm box corners lie off the cell, far from image
    evidence, and are the last keypoints a detector learns; its centre and displacements
    come much earlier, so this keeps large cells detectable on short budgets.
    """
    num_classes = heatmap.shape[0]
    score, position = hough_score_map(heatmap.flatten(0, 1), offset.flatten(0, 1), radius)
    channel, xy, kp_score = extract_keypoints(score, position, threshold, max_keypoints)
    if not len(xy):
        return heatmap.new_zeros(0, 4), heatmap.new_zeros(0), channel.new_zeros(0)
    classes, types = channel // NUM_TYPES, channel % NUM_TYPES
    sampled, at = sample_fields(displacement.flatten(0, 2), xy)
    rows = torch.arange(len(xy), device=xy.device)
    sampled = sampled.view(len(xy), num_classes, len(PAIRS), 2)[rows, classes]  # own class's fields
    partners = xy.new_full((len(xy), NUM_TYPES, 2), math.nan)
    for (k, l), j in PAIR_INDEX.items():
        rows = types == k
        partners[rows, l] = at[rows] + sampled[rows, j]
    groups = torch.from_numpy(group_keypoints(
        xy.cpu().numpy(), types.cpu().numpy(), classes.cpu().numpy(), kp_score.cpu().numpy(),
        partners.cpu().numpy(), tolerance)).to(heatmap.device)
    present = groups >= 0
    points = xy[groups.clamp(min=0)] * stride
    boxes, valid = keypoints_to_boxes(points, present)
    if complete and not valid.all():
        filled, known = complete_groups(groups, partners, xy, present)
        more, more_valid = keypoints_to_boxes(filled * stride, known)
        boxes = torch.where(valid[:, None], boxes, more)
        valid = valid | more_valid
    labels = classes[groups.max(1).values.clamp(min=0)]
    boxes, labels = boxes[valid], labels[valid]
    if not len(boxes):
        return boxes, heatmap.new_zeros(0), labels
    # score of the block holding each implied keypoint
    block = (box_keypoints(boxes) / stride + CANVAS_MARGIN).floor().long()  # (B, 5, 2)
    bx = block[..., 0].clamp(0, score.shape[2] - 1)
    by = block[..., 1].clamp(0, score.shape[1] - 1)
    channels = labels[:, None] * NUM_TYPES + torch.arange(NUM_TYPES, device=labels.device)
    scores = score[channels, by, bx].clamp(0, 1).mean(1)
    return boxes, scores, labels + 1

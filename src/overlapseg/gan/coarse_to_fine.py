"""Coarse-to-fine instance generation helpers (Zhao et al., paper ``004`` Sec. II; issue 19).

Stage 1 (positions and sizes): seed points from a spatial process form the *point domain*;
real instances become the *box domain*, one oval per box, half the box size, brightest at the
centre (Eq. 1, ``bv = 0.25``), all in one layer; connected components of a generated box image
give the boxes back. Stage 2 (shapes and interactions): ovals the size of their boxes, one
colour per instance, translate to colour masks with an extra boundary class; decoding takes
connected components of the non-boundary foreground and splits those still merged with an
iterative k-terminal cut (terminals at the box centres, edge weights from colour
differences). Stage 3 (texture) is pix2pix on :func:`overlapseg.gan.pix2pix.render_instance_condition`.

Rendering works for any number of spatial axes (ellipsoids in 3D, as the paper's HL60 data).
Arrays are in [0, 1]; the generators' [-1, 1] range is mapped by the caller.
"""
from __future__ import annotations

import colorsys
from typing import Callable, Sequence

import networkx as nx
import numpy as np
from networkx.algorithms.flow import boykov_kolmogorov
from scipy import ndimage

from overlapseg.gan.pix2pix import instance_boundaries

SEED_PROCESSES = ("uniform", "clustered")

COARSE_TO_FINE_DEFAULTS: dict = {
    "process": "uniform",       # seed-point process of the point domain
    "point_radius": 1.5,        # px, seed points rendered as small discs
    "bv": 0.25,                 # Eq. 1 boundary value
    "stage1_scale": 0.5,        # ovals half the box size (Sec. II-A)
    "stage2_scale": 1.0,        # ovals the box size (Sec. II-B)
    "n_colours": 8,             # palette; touching instances get different colours
    "boundary_width": 1,        # px, boundary class of the colour masks
    "oval_threshold": 0.1,      # half the oval edge value bv / (1 + bv)
    "fg_threshold": 0.5,        # colour-mask foreground: brightest channel above this
    "boundary_threshold": 0.5,
    "cut_sigma": 0.1,           # colour scale of the k-terminal cut edge weights
    "terminal_radius": 2,       # px, seed region around each box centre
    "min_pixels": 8,            # smaller decoded fragments are dropped
    "close_radius": 1,          # px, grey closing of the generated colour mask before decoding
    "min_extra_fraction": 0.25, # an instance without a box centre must cover this share of the
                                # median box oval, else it is a generator speck, not a nucleus
    "stage2_paired_l1": 1.0,    # weak paired MAE for stage 2 (10x below the cycle weight)
}


# ----------------------------------------------------------------------------- stage 1: points
def seed_points(shape: Sequence[int], n: int, rng: np.random.Generator, process: str = "uniform",
                n_clusters: int | None = None, cluster_std: float | None = None) -> np.ndarray:
    """``n`` seed points ``(n, ndim)`` (array index order) inside ``shape``.

    ``uniform``: independent uniform positions (complete spatial randomness). ``clustered``: a
    Thomas process - ``n_clusters`` uniform parents (default n // 5), each point a Gaussian
    offset (``cluster_std``, default min(shape) / 20) from a random parent, redrawn while
    outside the image. The paper lets the seed arrangement steer crowding (Sec. II-A).
    """
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1 or n < 0:
        raise ValueError(f"seed_points needs a non-empty shape and n >= 0, got {shape}, {n}")
    upper = np.asarray(shape, np.float64) - 1.0
    if process == "uniform":
        return rng.uniform(0.0, 1.0, (n, len(shape))) * upper
    if process != "clustered":
        raise ValueError(f"unknown seed-point process {process!r} (known: {', '.join(SEED_PROCESSES)})")
    k = max(1, n // 5) if n_clusters is None else int(n_clusters)
    std = min(shape) / 20.0 if cluster_std is None else float(cluster_std)
    if k < 1 or std <= 0:
        raise ValueError(f"clustered seed points need n_clusters >= 1 and cluster_std > 0, "
                         f"got {k}, {std}")
    parents = rng.uniform(0.0, 1.0, (k, len(shape))) * upper
    points = np.empty((n, len(shape)))
    for i in range(n):
        centre = parents[int(rng.integers(k))]
        for _ in range(100):
            p = centre + rng.normal(0.0, std, len(shape))
            if np.all(p >= 0) and np.all(p <= upper):
                break
        points[i] = np.clip(p, 0.0, upper)
    return points


def render_points(points: np.ndarray, shape: Sequence[int], radius: float = 1.5) -> np.ndarray:
    """Point-domain image: a disc (ball) of ``radius`` of value 1 at each seed point."""
    shape = tuple(int(s) for s in shape)
    points = np.asarray(points, np.float64).reshape(-1, len(shape))
    if radius < 0:
        raise ValueError(f"point radius must be >= 0, got {radius}")
    out = np.zeros(shape, np.float32)
    r = int(np.ceil(radius))
    for p in points:
        lo = [max(int(np.floor(c)) - r, 0) for c in p]
        hi = [min(int(np.ceil(c)) + r + 1, s) for c, s in zip(p, shape)]
        if any(h <= l for l, h in zip(lo, hi)):
            continue
        grids = np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij")
        dist2 = sum((g - c) ** 2 for g, c in zip(grids, p))
        win = tuple(slice(l, h) for l, h in zip(lo, hi))
        out[win] = np.maximum(out[win], (dist2 <= radius ** 2).astype(np.float32))
    return out


# ----------------------------------------------------------------------------- ovals
def _oval_window(shape, centre, size, scale):
    semi = np.asarray(size, np.float64) * scale / 2.0
    if np.any(semi <= 0):
        raise ValueError(f"box sizes must be > 0, got {size}")
    lo = [max(int(np.floor(c - a)), 0) for c, a in zip(centre, semi)]
    hi = [min(int(np.ceil(c + a)) + 1, s) for c, a, s in zip(centre, semi, shape)]
    return lo, hi, semi


def oval_intensity(shape: Sequence[int], centre: Sequence[float], size: Sequence[float],
                   bv: float = 0.25, scale: float = 0.5) -> np.ndarray:
    """Eq. 1 of ``004``: ``I = (1 - sum_i ((x_i - c_i) / a_i)^2 + bv) / (1 + bv)`` inside the oval,
    0 outside, with semi-axes ``a_i = scale * size_i / 2`` (``scale = 0.5``: the paper's w/4 and
    h/4, an oval half the box size). 1 at the centre, ``bv / (1 + bv)`` on the rim."""
    shape = tuple(int(s) for s in shape)
    if len(centre) != len(shape) or len(size) != len(shape):
        raise ValueError(f"centre {centre} and size {size} must have {len(shape)} coordinates")
    if bv < 0:
        raise ValueError(f"bv must be >= 0, got {bv}")
    out = np.zeros(shape, np.float32)
    lo, hi, semi = _oval_window(shape, centre, size, scale)
    if any(h <= l for l, h in zip(lo, hi)):
        return out
    grids = np.meshgrid(*[np.arange(l, h, dtype=np.float64) for l, h in zip(lo, hi)], indexing="ij")
    q = sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi))
    value = np.where(q <= 1.0, (1.0 - q + bv) / (1.0 + bv), 0.0)
    out[tuple(slice(l, h) for l, h in zip(lo, hi))] = value
    return out


def render_ovals(shape: Sequence[int], centres: np.ndarray, sizes: np.ndarray, bv: float = 0.25,
                 scale: float = 0.5) -> np.ndarray:
    """One-layer box-domain image (stage 1): the maximum of the Eq. 1 ovals of all boxes."""
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, np.float32)
    for c, s in zip(np.asarray(centres, np.float64), np.asarray(sizes, np.float64)):
        np.maximum(out, oval_intensity(shape, c, s, bv, scale), out=out)
    return out


def oval_labels(shape: Sequence[int], centres: np.ndarray, sizes: np.ndarray, bv: float = 0.25,
                scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Label image (1..N) of the ovals, each pixel owned by the oval brightest there (one
    layer), and that intensity."""
    shape = tuple(int(s) for s in shape)
    labels = np.zeros(shape, np.int32)
    best = np.zeros(shape, np.float32)
    for k, (c, s) in enumerate(zip(np.asarray(centres, np.float64), np.asarray(sizes, np.float64)), 1):
        value = oval_intensity(shape, c, s, bv, scale)
        win = value > best
        labels[win], best[win] = k, value[win]
    return labels, best


def boxes_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(centres, sizes)``, each ``(N, ndim)``, of labels 1..N (missing labels skipped).
    Centre = middle pixel of the extent, size = extent in pixels."""
    centres, sizes = [], []
    for sl in ndimage.find_objects(np.asarray(labels, np.int64)):
        if sl is None:
            continue
        centres.append([(s.start + s.stop - 1) / 2.0 for s in sl])
        sizes.append([float(s.stop - s.start) for s in sl])
    return _box_arrays(centres, sizes, np.ndim(labels))


def boxes_from_ovals(oval_image: np.ndarray, threshold: float = 0.1, scale: float = 0.5,
                     min_pixels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of a (generated) one-layer oval image: connected components above ``threshold``
    (the ovals are half-size, so touching boxes stay apart, Sec. II-A); a component spanning
    ``e`` pixels along an axis is an oval of diameter ~``e - 1``, i.e. a box of ``(e - 1) / scale``."""
    image = np.asarray(oval_image, np.float32)
    components, n = ndimage.label(image > threshold)
    centres, sizes = [], []
    for k, sl in enumerate(ndimage.find_objects(components), 1):
        if sl is None or (components[sl] == k).sum() < min_pixels:
            continue
        centres.append([(s.start + s.stop - 1) / 2.0 for s in sl])
        sizes.append([max(s.stop - s.start - 1, 1) / scale for s in sl])
    return _box_arrays(centres, sizes, image.ndim)


def _box_arrays(centres, sizes, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(centres, np.float64).reshape(-1, ndim),
            np.asarray(sizes, np.float64).reshape(-1, ndim))


# ----------------------------------------------------------------------------- stage 2: colours
def labels_from_masks(masks: np.ndarray) -> np.ndarray:
    """Instance masks ``(N, *spatial)`` -> label image 1..N (a later mask wins where they overlap)."""
    masks = np.asarray(masks, bool)
    if masks.ndim < 2:
        raise ValueError(f"masks must be (N, *spatial), got shape {masks.shape}")
    labels = np.zeros(masks.shape[1:], np.int32)
    for k, m in enumerate(masks, 1):
        labels[m] = k
    return labels


def masks_from_labels(labels: np.ndarray) -> np.ndarray:
    """Label image -> bool masks ``(N, *spatial)`` of its non-zero labels in increasing order."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    return np.stack([labels == i for i in ids]) if len(ids) else np.zeros((0,) + labels.shape, bool)


def palette(n: int) -> np.ndarray:
    """``n`` saturated colours ``(n, 3)`` in [0, 1], hues evenly spaced; the brightest channel is 1
    everywhere, so foreground is simply 'some channel high'."""
    if n < 2:
        raise ValueError(f"palette needs >= 2 colours, got {n}")
    return np.asarray([colorsys.hsv_to_rgb(i / n, 1.0, 1.0) for i in range(n)], np.float32)


def adjacency(labels: np.ndarray, distance: int = 2) -> dict[int, set[int]]:
    """Label -> labels within ``distance`` px (face-connected dilation)."""
    labels = np.asarray(labels)
    out: dict[int, set[int]] = {}
    for k, sl in enumerate(ndimage.find_objects(labels.astype(np.int64)), 1):
        if sl is None:
            continue
        win = tuple(slice(max(s.start - distance, 0), min(s.stop + distance, n))
                    for s, n in zip(sl, labels.shape))
        grown = ndimage.binary_dilation(labels[win] == k, iterations=distance)
        out[k] = set(np.unique(labels[win][grown]).tolist()) - {0, k}
    return out


def assign_colours(labels: np.ndarray, rng: np.random.Generator, n_colours: int = 8,
                   distance: int = 2, n_labels: int | None = None) -> np.ndarray:
    """Palette index per label, ``(n_labels + 1,)`` with entry 0 unused: greedy graph colouring
    in random order so instances within ``distance`` px differ in colour where the palette
    allows (the k-terminal cut relies on colour differences between touching instances)."""
    n = int(np.max(labels, initial=0)) if n_labels is None else int(n_labels)
    colours = -np.ones(n + 1, np.int64)
    neighbours = adjacency(labels, distance)
    for k in rng.permutation(np.arange(1, n + 1)):
        used = {int(colours[j]) for j in neighbours.get(int(k), ())}
        free = [int(c) for c in rng.permutation(n_colours) if int(c) not in used]
        colours[k] = free[0] if free else int(rng.integers(n_colours))
    colours[0] = 0
    return colours


def render_colour_ovals(shape: Sequence[int], centres: np.ndarray, sizes: np.ndarray,
                        colours: np.ndarray, bv: float = 0.25, scale: float = 1.0) -> np.ndarray:
    """Stage-2 box domain ``(3, *spatial)``: each box an oval of its own size (Sec. II-B) in its
    instance colour, shaded by Eq. 1 so centres stand out; one layer (brightest oval wins)."""
    colours = np.asarray(colours, np.float32).reshape(-1, 3)
    if len(colours) != len(centres):
        raise ValueError(f"{len(centres)} boxes but {len(colours)} colours")
    labels, value = oval_labels(shape, centres, sizes, bv, scale)
    table = np.concatenate([np.zeros((1, 3), np.float32), colours])
    return np.moveaxis(table[labels], -1, 0) * value[None]


def encode_colour_mask(labels: np.ndarray, colours: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Stage-2 mask domain ``(4, *spatial)``: channels 0-2 the colour of the instance (``colours``
    row ``label - 1``), channel 3 the boundary class - each instance's inner rim of
    ``boundary_width`` px against background or another instance (Sec. II-B, Fig. 3c)."""
    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    colours = np.asarray(colours, np.float32).reshape(-1, 3)
    if len(colours) < n:
        raise ValueError(f"labels up to {n} but only {len(colours)} colours")
    table = np.concatenate([np.zeros((1, 3), np.float32), colours[:n]])
    colour = np.moveaxis(table[labels], -1, 0)
    boundary = instance_boundaries(masks_from_labels(labels), boundary_width) if n else \
        np.zeros(labels.shape, bool)
    return np.concatenate([colour, boundary[None].astype(np.float32)])


def stage1_pair(labels: np.ndarray, shape: Sequence[int], n_points: int, rng: np.random.Generator,
                process: str = "uniform", point_radius: float = 1.5, bv: float = 0.25,
                scale: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(point image, box image) of stage 1, each ``(1, *spatial)``; unpaired by design (the
    seed points are drawn, not taken from ``labels``)."""
    points = seed_points(shape, n_points, rng, process)
    centres, sizes = boxes_from_labels(labels)
    return (render_points(points, shape, point_radius)[None],
            render_ovals(shape, centres, sizes, bv, scale)[None])


def stage2_pair(labels: np.ndarray, rng: np.random.Generator, n_colours: int = 8,
                boundary_width: int = 1, bv: float = 0.25,
                scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Corresponding (box, mask) images of one real label image (Sec. II-B): coloured ovals
    ``(3, ...)`` and colour mask with boundary class ``(4, ...)``, same colour per instance."""
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    dense = np.zeros(labels.shape, np.int32)  # relabel 1..N so rows of ``colours`` line up
    for k, i in enumerate(ids, 1):
        dense[labels == i] = k
    colours = palette(n_colours)[assign_colours(dense, rng, n_colours)[1:]]
    centres, sizes = boxes_from_labels(dense)
    return (render_colour_ovals(labels.shape, centres, sizes, colours, bv, scale),
            encode_colour_mask(dense, colours, boundary_width))


# ----------------------------------------------------------------------------- k-terminal cut
def _pixel_graph(mask: np.ndarray, colour: np.ndarray, sigma: float, eps: float):
    """Face-connected graph on the mask's pixels; capacity exp(-|dc|^2 / 2 sigma^2) + eps, so a
    cut between different colours is cheap and one through a uniform region expensive."""
    index = -np.ones(mask.shape, np.int64)
    index[mask] = np.arange(int(mask.sum()))
    graph = nx.Graph()
    graph.add_nodes_from(range(int(mask.sum())))
    for axis in range(mask.ndim):
        a = [slice(None)] * mask.ndim
        b = [slice(None)] * mask.ndim
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        both = mask[a] & mask[b]
        diff = colour[(slice(None),) + a] - colour[(slice(None),) + b]
        weight = np.exp(-(diff ** 2).sum(axis=0) / (2.0 * sigma ** 2)) + eps
        graph.add_weighted_edges_from(zip(index[a][both].tolist(), index[b][both].tolist(),
                                          weight[both].tolist()), weight="capacity")
    return graph, index


def k_terminal_cut(component_mask: np.ndarray, colour_image: np.ndarray, terminals: np.ndarray,
                   sigma: float = 0.1, terminal_radius: float = 2.0, eps: float = 1e-3) -> np.ndarray:
    """Split one merged component among ``k`` terminals (``004`` Sec. II-B, after [10]).

    Iterative isolating cuts (Dahlhaus et al.'s 2-approximation of the multiway cut, applied
    greedily): on the pixels still unassigned, each remaining terminal is cut from all the
    others by an s-t minimum cut (Boykov-Kolmogorov max-flow, networkx); the cheapest cut wins,
    its source side becomes that terminal's instance, and the loop repeats until one terminal
    is left, which takes the rest. Pixels cut off from every terminal join the nearest instance.

    Terminals are seed regions: given as points (box centres), the mask pixels within
    ``terminal_radius`` (nearest point wins; a single-pixel terminal could be isolated by a cut
    of only 2*ndim edges); or given directly as an int seed image of the mask's shape
    (terminal ``t`` = value ``t``), e.g. the half-size stage-1 ovals.

    ``component_mask``: bool (*spatial); ``colour_image``: (C, *spatial) or (*spatial) float;
    ``terminals``: (k, ndim) points or seed image. Returns int32 labels 1..k (terminal
    order), 0 outside the mask.
    """
    mask = np.asarray(component_mask, bool)
    colour = np.asarray(colour_image, np.float64)
    if colour.ndim == mask.ndim:
        colour = colour[None]
    if colour.shape[1:] != mask.shape:
        raise ValueError(f"colour image {colour.shape} does not match mask {mask.shape}")
    if not mask.any():
        raise ValueError("k_terminal_cut: empty component")
    if sigma <= 0 or terminal_radius < 0:
        raise ValueError(f"sigma > 0 and terminal_radius >= 0 required, got {sigma}, {terminal_radius}")
    coords = np.argwhere(mask).astype(np.float64)
    terminals = np.asarray(terminals)
    if terminals.shape == mask.shape and np.issubdtype(terminals.dtype, np.integer):
        seed_values = terminals[mask]
        k = int(terminals.max(initial=0))
        seeds = [set(np.flatnonzero(seed_values == t + 1).tolist()) for t in range(k)]
        if k == 0 or not all(seeds):
            raise ValueError("k_terminal_cut: every seed label 1..k needs a pixel inside the component")
    else:
        points = terminals.astype(np.float64).reshape(-1, mask.ndim)
        k = len(points)
        if k == 0:
            raise ValueError("k_terminal_cut needs at least one terminal")
        # the nearest terminal owns each pixel within the radius; a terminal outside the
        # mask snaps to the nearest mask pixel
        d2 = ((coords[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
        nearest = d2.argmin(axis=1)
        seeds = []
        for t in range(k):
            own = (nearest == t) & (d2[:, t] <= terminal_radius ** 2)
            seeds.append(set(np.flatnonzero(own).tolist()) or {int(d2[:, t].argmin())})
        if any(seeds[i] & seeds[j] for i in range(k) for j in range(i + 1, k)):
            raise ValueError("k_terminal_cut: two terminals share a pixel")
    labels = np.zeros(mask.shape, np.int32)
    if k == 1:
        labels[mask] = 1
        return labels
    graph, index = _pixel_graph(mask, colour, sigma, eps)
    owner = np.zeros(len(coords), np.int32)
    alive = set(graph.nodes)
    remaining = list(range(k))
    while len(remaining) > 1:
        sub = graph.subgraph(alive)
        best = None
        for t in remaining:
            flow_graph = nx.Graph(sub)
            for node in seeds[t]:
                flow_graph.add_edge("source", node)  # no capacity attribute: infinite
            for other in remaining:
                if other != t:
                    for node in seeds[other]:
                        flow_graph.add_edge("sink", node)
            value, (side, _) = nx.minimum_cut(flow_graph, "source", "sink", capacity="capacity",
                                              flow_func=boykov_kolmogorov)
            if best is None or value < best[0]:
                best = (value, t, side - {"source"})
        _, t, side = best
        owner[list(side)] = t + 1
        alive -= side
        remaining.remove(t)
    last = remaining[0]
    reach = nx.node_connected_component(graph.subgraph(alive), next(iter(seeds[last])))
    owner[list(reach)] = last + 1
    labels[mask] = owner
    if (labels[mask] == 0).any():  # cut-off pockets join the nearest instance
        _, nearest_idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        fill = labels[tuple(nearest_idx)]
        labels = np.where(mask & (labels == 0), fill, labels).astype(np.int32)
    return labels


# ----------------------------------------------------------------------------- decoding
def colour_mask_foreground(mask_image: np.ndarray, fg_threshold: float = 0.5,
                           boundary_threshold: float = 0.5, close_radius: int = 1
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The "processed" generated colour mask (``004`` Fig. 3(d)): a grey closing of radius
    ``close_radius`` per channel fills the one-pixel dark rows and holes that an undertrained
    generator leaves inside a nucleus (seen at the CPU budget: every other row dark, so one
    nucleus decoded as ten stripes), without growing an instance past its outline; the
    boundary channel is left as generated, so it still separates touching instances. Returns
    ``(colour, boundary, foreground)``; foreground is brightest colour channel >
    ``fg_threshold`` or boundary > ``boundary_threshold``."""
    image = np.asarray(mask_image, np.float32)
    if image.ndim < 3 or image.shape[0] != 4:
        raise ValueError(f"colour mask must be (4, *spatial) (RGB + boundary), got {image.shape}")
    if close_radius < 0:
        raise ValueError(f"close_radius must be >= 0, got {close_radius}")
    colour, boundary = image[:3], image[3] > boundary_threshold
    if close_radius:  # colour only: the boundary class keeps separating touching instances
        size = (1,) + (2 * int(close_radius) + 1,) * (image.ndim - 1)
        colour = ndimage.grey_closing(colour, size=size)
    return colour, boundary, (colour.max(axis=0) > fg_threshold) | boundary


def decode_colour_mask(mask_image: np.ndarray, centres: np.ndarray | None = None,
                       sizes: np.ndarray | None = None, fg_threshold: float = 0.5,
                       boundary_threshold: float = 0.5, min_pixels: int = 8, sigma: float = 0.1,
                       terminal_radius: float = 2.0, seed_scale: float = 0.5,
                       close_radius: int = 1, min_extra_fraction: float = 0.25) -> np.ndarray:
    """Generated stage-2 colour mask ``(4, *spatial)`` in [0, 1] -> instance label image.

    The mask is first processed by :func:`colour_mask_foreground` (grey closing, foreground).
    Instances are the connected components of the foreground minus the boundary class; a
    component holding several box ``centres`` is split by :func:`k_terminal_cut`, seeded by the
    boxes' ovals at ``seed_scale`` (the stage-1 half-size ovals, which lie inside their
    instance) when ``sizes`` are given, else by discs of ``terminal_radius``. Components without
    a centre are kept as instances the generator added (Sec. II-A) only when they cover at least
    ``min_extra_fraction`` of the median box oval (with ``sizes``): smaller ones are generator
    specks, and keeping them taught a detector 12 px nuclei. Fragments under ``min_pixels`` are
    dropped. Boundary pixels then join the nearest instance of their own foreground component,
    so every instance lies on the (processed) generated foreground.
    """
    colour, boundary, foreground = colour_mask_foreground(mask_image, fg_threshold,
                                                          boundary_threshold, close_radius)
    core = foreground & ~boundary
    components, _ = ndimage.label(core)
    ndim = core.ndim
    centres = np.asarray([] if centres is None else centres, np.float64).reshape(-1, ndim)
    if sizes is not None:
        sizes = np.asarray(sizes, np.float64).reshape(-1, ndim)
        if len(sizes) != len(centres):
            raise ValueError(f"{len(centres)} centres but {len(sizes)} sizes")
    if not 0.0 <= min_extra_fraction <= 1.0:
        raise ValueError(f"min_extra_fraction must be in [0, 1], got {min_extra_fraction}")
    min_extra = int(min_pixels)
    if sizes is not None and len(sizes):
        oval_volume = np.pi / 4 if ndim == 2 else np.pi / 6  # ellipse / ellipsoid in its box
        min_extra = max(min_extra, int(min_extra_fraction * oval_volume * np.median(sizes.prod(axis=1))))
    points = np.rint(centres).astype(np.int64)
    keep = np.flatnonzero(np.all((points >= 0) & (points < np.asarray(core.shape)), axis=1))
    _, first = np.unique(points[keep], axis=0, return_index=True)  # one terminal per pixel
    keep = keep[np.sort(first)]
    hit = components[tuple(points[keep].T)] if len(keep) else np.zeros(0, np.int64)
    labels = np.zeros(core.shape, np.int32)
    next_label = 1
    for k, sl in enumerate(ndimage.find_objects(components), 1):
        if sl is None:
            continue
        comp = components[sl] == k
        if comp.sum() < min_pixels:
            continue
        mine = keep[hit == k]
        if not len(mine) and comp.sum() < min_extra:
            continue
        if len(mine) <= 1:
            labels[sl][comp] = next_label
            next_label += 1
            continue
        offset = np.asarray([s.start for s in sl])
        if sizes is not None:
            seeds, _ = oval_labels(comp.shape, centres[mine] - offset, sizes[mine], scale=seed_scale)
            seeds[~comp] = 0
            for t, pt in enumerate(points[mine] - offset, 1):
                if not (seeds == t).any():
                    seeds[tuple(pt)] = t
            terminals = seeds
        else:
            terminals = points[mine] - offset
        parts = k_terminal_cut(comp, colour[(slice(None),) + sl], terminals, sigma, terminal_radius)
        for part in range(1, len(mine) + 1):
            piece = parts == part
            if piece.sum() >= min_pixels:
                labels[sl][piece] = next_label
                next_label += 1
    # grow instances over the boundary class (and dropped fragments) without leaving the
    # foreground: each such pixel takes the nearest instance of its foreground component
    todo = foreground & (labels == 0)
    if todo.any() and next_label > 1:
        _, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        fg_comp, _ = ndimage.label(foreground)
        same = fg_comp[tuple(nearest)] == fg_comp
        labels = np.where(todo & same, labels[tuple(nearest)], labels).astype(np.int32)
    return labels


def coarse_to_fine_masks(points_image: np.ndarray, stage1: Callable[[np.ndarray], np.ndarray],
                         stage2: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
                         params: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stages 1-2 end to end: point image ``(1, ...)`` -> ``stage1`` -> box image -> boxes ->
    coloured ovals -> ``stage2`` -> colour mask -> instance labels. ``stage1``/``stage2`` map
    [0, 1] arrays to [0, 1] arrays (e.g. ``translate`` of a trained generator with range
    conversion). Returns ``(labels, centres, sizes)``; boxes are the stage-1 boxes."""
    p = {**COARSE_TO_FINE_DEFAULTS, **(params or {})}
    unknown = set(p) - set(COARSE_TO_FINE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown coarse-to-fine parameters {sorted(unknown)}")
    box_image = np.asarray(stage1(points_image), np.float32)
    shape = box_image.shape[1:]
    centres, sizes = boxes_from_ovals(box_image[0], p["oval_threshold"], p["stage1_scale"])
    ovals, _ = oval_labels(shape, centres, sizes, p["bv"], p["stage2_scale"])
    index = assign_colours(ovals, rng, p["n_colours"], n_labels=len(centres))
    colours = palette(p["n_colours"])[index[1:]]
    colour_boxes = render_colour_ovals(shape, centres, sizes, colours, p["bv"], p["stage2_scale"])
    mask_image = np.asarray(stage2(colour_boxes), np.float32)
    labels = decode_colour_mask(mask_image, centres, sizes, p["fg_threshold"],
                                p["boundary_threshold"], p["min_pixels"], p["cut_sigma"],
                                p["terminal_radius"], p["stage1_scale"], p["close_radius"],
                                p["min_extra_fraction"])
    return labels, centres, sizes

"""What a training source contributes: the categories it annotates and its share of the draws.

Pure functions without torch, shared by the trainers (ignore masks, the mix recorded in
``model.pt``) and the report (table captions).

Annotation scope (issue 28): a source annotates some categories (``CanonicalDataset.annotated``;
the coarse-to-fine, p+CycleGAN and r+p2p sets annotate nuclei only). A semantic class derived
from a category the source does not annotate is unknown on its images, not absent: the cells
around generated nuclei exist but carry no masks. Its target is ignored there
(:func:`known_classes`), while the classes derived from annotated categories keep every pixel,
negatives included (nucleus vs not-nucleus is fully annotated in a nuclei-only set).

Mix: ``inputs.mix`` gives each source a sampling weight; without it images are drawn uniformly
from the union of the sources, so each source's share is its share of the images
(:func:`resolve_mix`). :func:`mix_caption` writes a row's mix for table captions.
"""
from __future__ import annotations

from typing import Sequence

from overlapseg.data.canonical import CATEGORY_IDS

#: the categories each semantic class (``overlapseg.data.semantic.SEMANTIC_CLASSES``) is derived
#: from: border, overlap and background (= not in a cell) are all computed from the cells
CLASS_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cytoplasm": ("cytoplasm",), "border": ("cytoplasm",), "overlap": ("cytoplasm",),
    "background": ("cytoplasm",), "nucleus": ("nucleus",)}

#: names of the study's sources in captions (others appear under their own name)
SOURCE_LABELS: dict[str, str] = {
    "original": "real", "ccce": "CCCE", "copypaste": "copy-paste",
    "copypaste_pix2pix": "copy-paste+pix2pix", "copypaste_pix2pix_100": "copy-paste+pix2pix (100)",
    "mask2image": "mask->image", "p_cyclegan": "p+CycleGAN", "r_p2p": "r+p2p",
    "c2f": "coarse-to-fine"}

UNIFORM = "uniform-by-image"
WEIGHTS = "weights"


def known_classes(classes: Sequence[str], annotated: Sequence[str]) -> list[bool]:
    """For each semantic class, whether a source annotating ``annotated`` knows its target."""
    have = set(annotated)
    out = []
    for c in classes:
        if c not in CLASS_CATEGORIES:
            raise ValueError(f"unknown semantic class {c!r} (known: {', '.join(CLASS_CATEGORIES)})")
        out.append(all(cat in have for cat in CLASS_CATEGORIES[c]))
    return out


def annotated_labels(annotated: Sequence[str]) -> list[bool]:
    """Per label id (0 background, then category ids): whether the source annotates it. The
    background entry is True: a detector's background is what is left of annotated categories."""
    have = set(annotated)
    return [True] + [name in have for name, _ in sorted(CATEGORY_IDS.items(), key=lambda kv: kv[1])]


def resolve_mix(sources: Sequence[str], sizes: Sequence[int],
                mix: Sequence[float] | None = None) -> dict:
    """The effective mix: per source its images, weight and share of the draws.

    ``mix`` None: images uniformly from the union (``rule: uniform-by-image``, shares = image
    shares); else source ``s`` is drawn with probability ``mix[s] / sum(mix)`` over the
    sources that have images (``rule: weights``), as ``overlapseg.train.base.draw_items``.
    """
    sources, sizes = list(sources), [int(n) for n in sizes]
    if len(sources) != len(sizes):
        raise ValueError(f"{len(sources)} sources but {len(sizes)} sizes")
    if mix is None:
        total = sum(sizes)
        shares = [n / total if total else 0.0 for n in sizes]
        weights = None
    else:
        if len(mix) != len(sources):
            raise ValueError(f"inputs.mix has {len(mix)} weights for {len(sources)} sources")
        if any(not w >= 0 for w in mix) or not sum(w for w, n in zip(mix, sizes) if n) > 0:
            raise ValueError(f"inputs.mix {list(mix)}: weights must be >= 0, with a positive "
                             "weight on a source that has images")
        weights = [float(w) for w in mix]
        total = sum(w for w, n in zip(weights, sizes) if n)
        shares = [w / total if n else 0.0 for w, n in zip(weights, sizes)]
    return {"rule": UNIFORM if mix is None else WEIGHTS, "sources": sources, "images": sizes,
            "weights": weights, "shares": [round(s, 6) for s in shares]}


def _ratio(values: Sequence[float]) -> str:
    """``1:3`` for [0.25, 0.75]: values over the smallest positive one, ``%g``-formatted."""
    base = min((v for v in values if v > 0), default=1.0)
    return ":".join(f"{v / base:.3g}" for v in values)


def mix_caption(sources: Sequence[str], mix: Sequence[float] | None = None,
                sizes: Sequence[int] | None = None, labels: dict[str, str] | None = None) -> str:
    """A row's training mix for a caption: ``real:CCCE 1:1`` (weights), ``real + CCCE uniform by
    image (18:40 images)`` (no mix; counts when ``sizes`` are known) or ``CCCE`` (one source).
    ``labels`` override :data:`SOURCE_LABELS`. Accepts a ``model.pt`` record's ``mix`` as
    ``mix_caption(r["sources"], r["weights"], r["images"])``."""
    names = [{**SOURCE_LABELS, **(labels or {})}.get(s, s) for s in sources]
    if len(names) == 1:
        return names[0]
    if mix is not None:
        if len(mix) != len(names):
            raise ValueError(f"inputs.mix has {len(mix)} weights for {len(names)} sources")
        return f"{':'.join(names)} {_ratio([float(w) for w in mix])}"
    counts = f" ({':'.join(str(int(n)) for n in sizes)} images)" if sizes is not None else ""
    return f"{' + '.join(names)} uniform by image{counts}"

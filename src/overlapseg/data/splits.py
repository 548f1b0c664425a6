"""Deterministic train/val/test splits of a canonical dataset.

Default: stratified by cells per image (images are ordered by cell count, shuffled within
each count by the seed, and every k-th image goes to test/val), so each split sees the same
range of clump sizes. Presets:

- ``test-only``: every image in ``test`` (a dataset used only to evaluate models trained
  elsewhere).
- ``isbi2014-official``: the protocol of DoNet (Sec. 4.1): the 45 challenge training images
  train, the first 90 test images validate, the remaining 810 test. Needs the test set
  (``subset == "test"`` images) of the full challenge release.
- ``subsets``: keep the raw data's own train/test subsets, carving ``val`` out of train.
- ``auto``: the protocol the data allows: ``isbi2014-official`` when the raw test subset has
  the full release's 900 images, ``subsets`` when it has a smaller test subset (Train45Test90),
  stratified fractions when the data has no test subset (e.g. a development extract).
- ``pooled``: stratified fractions over every image, the raw test subset included (an explicit
  opt-in; without a preset, data holding an official test subset is refused, because a
  fraction split would silently train on official test images).

``splits.json`` records the protocol that produced it (``protocol``) next to the name lists.
"""
from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from overlapseg.data.canonical import CanonicalDataset, DataError
from overlapseg.utils.io import write_json

PRESETS = ("test-only", "isbi2014-official", "subsets", "auto", "pooled")
OFFICIAL_VAL = 90  # DoNet's protocol: the first 90 official test images validate


def _systematic_pick(ordered: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Take ``round(fraction * n)`` items spread evenly along ``ordered``; return (picked, rest)."""
    n = len(ordered)
    k = int(round(fraction * n))
    if k == 0:
        return [], list(ordered)
    positions = set(np.floor((np.arange(k) + 0.5) * n / k).astype(int).tolist())
    picked = [x for i, x in enumerate(ordered) if i in positions]
    rest = [x for i, x in enumerate(ordered) if i not in positions]
    return picked, rest


def stratified_order(names: list[str], strata: dict[str, int], seed: int) -> list[str]:
    """Names grouped by stratum (ascending), shuffled within each stratum by ``seed``."""
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = defaultdict(list)
    for name in sorted(names):
        groups[strata.get(name, 0)].append(name)
    ordered: list[str] = []
    for key in sorted(groups):
        members = groups[key]
        ordered.extend(members[i] for i in rng.permutation(len(members)))
    return ordered


def split_names(names: list[str], strata: dict[str, int], seed: int,
                val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"split fractions must be in [0, 1) and sum below 1, got val="
                         f"{val_fraction}, test={test_fraction}")
    ordered = stratified_order(names, strata, seed)
    test, rest = _systematic_pick(ordered, test_fraction)
    val_share = val_fraction / (1 - test_fraction) if test_fraction < 1 else 0
    val, train = _systematic_pick(rest, val_share)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def resolve_preset(ds: CanonicalDataset, preset: str | None) -> str | None:
    """The protocol ``auto`` stands for on this dataset; a fraction split (None) of data that
    holds an official test subset is refused (it would train on official test images)."""
    official_test = [n for n in ds.names if ds.images[n].get("subset") == "test"]
    if preset == "auto":
        if len(official_test) > OFFICIAL_VAL:
            return "isbi2014-official"
        return "subsets" if official_test else None
    if preset is None and official_test:
        raise DataError(ds.annotation_file, f"the data holds {len(official_test)} images of the raw "
                        "test subset, and a fraction split (preset: null) would train on them; use "
                        "preset: auto (the official protocol the data allows), isbi2014-official or "
                        "subsets, or preset: pooled to pool train and test images deliberately")
    return preset


def make_splits(ds: CanonicalDataset, seed: int = 0, val_fraction: float = 0.2,
                test_fraction: float = 0.2, preset: str | None = None) -> dict[str, list[str]]:
    """train/val/test name lists plus ``protocol``: the preset that produced them
    (``auto`` resolved; ``fractions`` for a stratified split)."""
    names = ds.names
    asked = preset
    preset = resolve_preset(ds, preset)
    if preset in (None, "pooled"):
        splits = split_names(names, ds.cells_per_image, seed, val_fraction, test_fraction)
    elif preset == "test-only":
        splits = {"train": [], "val": [], "test": sorted(names)}
    elif preset in ("isbi2014-official", "subsets"):
        train = sorted(n for n in names if ds.images[n].get("subset") == "train")
        test = sorted(n for n in names if ds.images[n].get("subset") == "test")
        if not test:
            raise DataError(ds.annotation_file, f"split preset {preset!r} needs the raw test set "
                            "(no image has subset 'test'); ingest the full release")
        if preset == "isbi2014-official":
            if len(test) <= 90:
                raise DataError(ds.annotation_file, "split preset 'isbi2014-official' (45/90/810) "
                                f"needs the 900-image test set, found {len(test)} test images")
            splits = {"train": train, "val": test[:90], "test": test[90:]}
        else:
            sub = split_names(train, ds.cells_per_image, seed, val_fraction, 0.0)
            splits = {"train": sub["train"], "val": sub["val"], "test": test}
    else:
        raise ValueError(f"unknown split preset {preset!r}; known: {', '.join(PRESETS)}")
    if preset != "test-only" and not splits["train"]:
        raise DataError(ds.annotation_file, f"split leaves no training images ({len(names)} images)")
    if preset in (None, "pooled") and test_fraction > 0 and not splits["test"]:
        # every metric of the study would be n/a and the figures job would fail much later
        raise DataError(ds.annotation_file, f"split leaves no test images ({len(names)} image(s), "
                        f"test_fraction {test_fraction}); add images, or use test_fraction 0 for a "
                        "training-only dataset")
    protocol = preset or "fractions"
    splits["protocol"] = f"{protocol} (auto)" if asked == "auto" else protocol
    return splits


def write_splits(path: str | os.PathLike, splits: dict[str, list[str]]) -> None:
    write_json(path, splits)

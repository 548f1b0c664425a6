"""Error analysis AP variants of the thesis (Sec. 5.7.4, Table 5.11).

* "w/ gt mask": each gt instance's best prediction (one-to-one by Dice) gets the gt mask in
  place of its own, keeping its score - the AP left when masks are perfect and only
  detection/ranking errors remain.
* "gt matched": only predictions matched (one-to-one) to a gt with Dice >= ``min_dice`` are
  kept, masks unchanged - the AP when every spurious prediction is removed, which isolates
  the effect of mask quality and of ranking among the matched ones.
"""
from __future__ import annotations

import numpy as np

from overlapseg.evaluate.matching import PairTable, match


def error_variants(gts: list[dict], dts: list[dict], table: PairTable,
                   min_dice: float = 0.5) -> tuple[list[dict], list[dict]]:
    """(w/ gt mask, gt matched) detections of one image/category; ``table`` spans all ``dts``."""
    dice = table.dice
    gi, di = match(dice, 0.0, strict=True)
    with_gt = [dict(d) for d in dts]
    for g, d in zip(gi, di):
        with_gt[d].update(segmentation=gts[g]["segmentation"], area=gts[g]["area"],
                          bbox=list(gts[g]["bbox"]))
    g2, d2 = match(dice, min_dice)
    keep = np.zeros(len(dts), dtype=bool)
    keep[d2] = True
    return with_gt, [d for d, k in zip(dts, keep) if k]

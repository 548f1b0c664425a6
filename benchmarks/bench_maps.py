"""Time overlap-probability maps per image: 512x512 image with 10 overlapping cells.

Usage: python benchmarks/bench_maps.py [--repeat 20]. Prints milliseconds per map (median).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from overlapseg.maps.overlap_maps import VARIANTS, overlap_probability_map


def scene(n_cells: int = 10, size: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cells, nuclei = [], []
    for _ in range(n_cells):
        cy, cx = rng.uniform(60, size - 60, 2)
        a, b = rng.uniform(25, 55, 2)
        t = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(t) + (xx - cx) * np.sin(t)
        v = -(yy - cy) * np.sin(t) + (xx - cx) * np.cos(t)
        cells.append((u / a) ** 2 + (v / b) ** 2 <= 1)
        nuclei.append((yy - cy) ** 2 + (xx - cx) ** 2 <= 8 ** 2)
    return np.stack(cells), np.stack(nuclei)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    cells, nuclei = scene()
    runs = [(v, {}) for v in VARIANTS] + [("v4", {"max_distance": 64.0})]
    for variant, params in runs:
        overlap_probability_map(cells, nuclei, variant, **params)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            overlap_probability_map(cells, nuclei, variant, **params)
            times.append(time.perf_counter() - t0)
        label = variant + (f" {params}" if params else "")
        print(f"{label:28s} 512x512, 10 cells: {1e3 * np.median(times):7.1f} ms/image (median of {args.repeat})")


if __name__ == "__main__":
    main()

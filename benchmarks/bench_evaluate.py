"""Time per image of the whole evaluation suite (issue 3): 512x512 images, 10 overlapping gt
cells (+ nuclei) and 50 scored predictions per image. Prints seconds per image (one process;
pin to one core with `taskset -c 0` for the single-core figure)."""
from __future__ import annotations

import argparse
import time

import numpy as np

from overlapseg.evaluate import evaluate
from overlapseg.evaluate.toy import toy_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--preds", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    gt, preds = toy_case(seed=0, n_images=args.images, size=args.size, n_cells=args.cells,
                         n_pred=args.preds)
    n_gt = len(gt["annotations"]) / args.images
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        evaluate(gt, preds)
        times.append((time.perf_counter() - t0) / args.images)
    print(f"evaluate: {args.images} images {args.size}x{args.size}, {n_gt:.1f} gt instances "
          f"and {len(preds) / args.images:.1f} predictions per image")
    print(f"time per image: best {min(times):.4f} s, median {np.median(times):.4f} s "
          f"(target < 0.2 s)")


if __name__ == "__main__":
    main()

"""Evaluation of one dense whole-slide tile (issue 31): a 4096 x 4096 image with 1200 cells and
1200 nuclei (ground truth), and one prediction per instance (shifted by up to 2 px, random
score) plus 10% spurious ones. Prints wall and CPU seconds of ``evaluate`` and its peak memory
(Python allocations via tracemalloc in a second, untimed run, and the process's max RSS,
which includes the inputs).

Before the fix this ran ~15 min and then crashed (pycocotools ``area`` on >= 256 RLEs);
evaluation now works on RLEs and bounding-box-overlapping pairs only.
"""
from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from bench_large_image import _ellipse  # same synthetic cell shape (run from benchmarks/ or as a script)
from overlapseg.data.canonical import CATEGORIES, encode_crop


def _place(crop: np.ndarray, y0: int, x0: int, size: int) -> dict:
    """Full-frame RLE of ``crop`` at (y0, x0), clipped to the image."""
    sy, sx = max(0, -y0), max(0, -x0)
    ey, ex = min(crop.shape[0], size - y0), min(crop.shape[1], size - x0)
    return encode_crop(crop[sy:ey, sx:ex], (y0 + sy, x0 + sx), (size, size))


def dense_case(size: int = 4096, cells: int = 1200, seed: int = 0) -> tuple[dict, list[dict]]:
    """COCO gt (cells on a jittered grid, neighbours overlapping, one nucleus each) and predictions."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(cells)))
    step = size / side
    anns, preds = [], []
    for k in range(cells):
        gy, gx = divmod(k, side)
        cy = int(np.clip((gy + 0.5) * step + rng.uniform(-0.2, 0.2) * step, 0, size - 1))
        cx = int(np.clip((gx + 0.5) * step + rng.uniform(-0.2, 0.2) * step, 0, size - 1))
        parent = None
        for category, scale in ((1, 0.62), (2, 0.15)):
            crop = _ellipse(scale * step * rng.uniform(0.8, 1.1), scale * step * rng.uniform(0.8, 1.1),
                            rng.uniform(0, np.pi))
            r = crop.shape[0] // 2
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": category, "iscrowd": 0,
                         "segmentation": _place(crop, cy - r, cx - r, size), "parent_id": parent})
            parent = anns[-1]["id"] if category == 1 else None
            dy, dx = rng.integers(-2, 3, 2)
            preds.append({"image_id": 1, "category_id": category, "score": float(rng.uniform(0.3, 1.0)),
                          "segmentation": _place(crop, cy - r + int(dy), cx - r + int(dx), size)})
    for _ in range(cells // 10):
        crop = _ellipse(*(0.5 * step * rng.uniform(0.6, 1.0, 2)), rng.uniform(0, np.pi))
        preds.append({"image_id": 1, "category_id": int(rng.integers(1, 3)), "score": float(rng.uniform(0, 0.6)),
                      "segmentation": _place(crop, *(int(v) for v in rng.integers(0, size, 2)), size)})
    gt = {"images": [{"id": 1, "file_name": "slide.png", "height": size, "width": size}],
          "categories": CATEGORIES, "annotations": anns}
    return gt, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--cells", type=int, default=1200, help="cells (each also has a nucleus)")
    args = ap.parse_args()
    from overlapseg.evaluate import evaluate

    gt, preds = dense_case(args.size, args.cells)
    print(f"{args.size} x {args.size} px, {len(gt['annotations'])} gt instances "
          f"({args.cells} cells + nuclei), {len(preds)} predictions")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluate(gt, preds)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()  # a second run: tracing slows allocation down, so it is not timed
    evaluate(gt, preds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"evaluate: {seconds:.1f} s wall, {cpu:.1f} s CPU; peak Python allocations {peak / 2**20:.0f} MB "
          f"(tracemalloc); max RSS {rss:.0f} MB ({rss0:.0f} MB before evaluate)")
    m = metrics["mean"]
    print(f"AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}  AJI {m['AJI']:.4f}  F1 {m['F1']:.4f}  "
          f"max_detections {metrics['params']['max_detections']}")


if __name__ == "__main__":
    main()

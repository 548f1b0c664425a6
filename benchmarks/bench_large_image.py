"""Large images (whole-slide tiles): one 4096 x 4096 image with 800 instances (400 overlapping
cells with one nucleus each, COCO RLE) through ``ingest`` and the overlap maps v0-v4.

Each stage runs in its own process so that its peak memory (max RSS) is its own; prints
wall and CPU seconds (CPU time is the fairer number on a busy machine) and peak GB per
stage. Goal (issue 11, item 12): ingest and every map variant each under 4 GB and, together
with ingest, under 60 s on 2 cores. ``--cells 800`` doubles the instances.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from overlapseg.data.canonical import encode_crop


def _ellipse(ry: float, rx: float, angle: float) -> np.ndarray:
    """Bool crop of a rotated ellipse (semi-axes ry, rx px)."""
    r = int(np.ceil(max(ry, rx)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def write_fixture(raw: Path, size: int, cells: int, seed: int = 0) -> int:
    """COCO json + PNG of one ``size`` px image with ``cells`` cells (each with a nucleus)
    on a jittered grid, neighbours overlapping; masks are encoded from their crops."""
    rng = np.random.default_rng(seed)
    (raw / "images").mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), 225, np.uint8)
    side = int(np.ceil(np.sqrt(cells)))
    step = size / side
    anns = []
    for k in range(cells):
        gy, gx = divmod(k, side)
        cy = int(np.clip((gy + 0.5) * step + rng.uniform(-0.2, 0.2) * step, 0, size - 1))
        cx = int(np.clip((gx + 0.5) * step + rng.uniform(-0.2, 0.2) * step, 0, size - 1))
        for category, scale, parent in ((1, 0.62, None), (2, 0.15, len(anns) + 1)):
            crop = _ellipse(scale * step * rng.uniform(0.8, 1.1), scale * step * rng.uniform(0.8, 1.1),
                            rng.uniform(0, np.pi))
            r = crop.shape[0] // 2
            y0, x0 = cy - r, cx - r
            # clip the crop to the image
            sy, sx = max(0, -y0), max(0, -x0)
            ey, ex = min(crop.shape[0], size - y0), min(crop.shape[1], size - x0)
            crop = crop[sy:ey, sx:ex]
            y0, x0 = y0 + sy, x0 + sx
            view = image[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
            view[crop] = (view[crop] * (0.8 if category == 1 else 0.5)).astype(np.uint8)
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": category, "iscrowd": 0,
                         "segmentation": encode_crop(crop, (y0, x0), (size, size)),
                         "parent_id": parent})
    cv2.imwrite(str(raw / "images" / "slide.png"), image)
    coco = {"images": [{"id": 1, "file_name": "slide.png", "height": size, "width": size}],
            "categories": [{"id": 1, "name": "cytoplasm"}, {"id": 2, "name": "nucleus"}],
            "annotations": anns}
    (raw / "instances.json").write_text(json.dumps(coco))
    return len(anns)


def run_stage(stage: str, work: Path) -> None:
    """One stage in this process; prints a JSON line with seconds and peak RSS."""
    t0, c0 = time.perf_counter(), time.process_time()
    if stage == "ingest":
        from overlapseg.data.ingest import ingest

        ingest("coco", work / "raw", work / "data")
    else:
        from overlapseg.maps.overlap_maps import write_maps

        write_maps(work / "data", stage, work / "maps" / stage)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "seconds": round(seconds, 2), "cpu": round(cpu, 2),
                      "peak_mb": round(peak_mb)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--cells", type=int, default=400, help="cells (each also has a nucleus)")
    ap.add_argument("--variants", nargs="+", default=["v0", "v1", "v2", "v3", "v4"])
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        run_stage(args.stage, args.work)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        n = write_fixture(work / "raw", args.size, args.cells)
        print(f"{args.size} x {args.size} px, {n} instances ({args.cells} cells + nuclei)")
        total = 0.0
        for stage in ["ingest", *args.variants]:
            out = subprocess.run([sys.executable, __file__, "--stage", stage, "--work", str(work)],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            total += r["seconds"] if stage == "ingest" else 0.0
            print(f"{stage:>6}: {r['seconds']:6.1f} s (CPU {r['cpu']:5.1f} s)  peak "
                  f"{r['peak_mb'] / 1024:5.2f} GB"
                  + ("" if stage == "ingest" else f"  (ingest + {stage}: {total + r['seconds']:.1f} s)"))


if __name__ == "__main__":
    main()

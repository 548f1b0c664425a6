"""Ingestion speed: ISBI 2014 .mat reading (v5 vs v7.3), whole isbi2014 ingestion, and EDF
outline recovery on a 1024 x 1024 ground truth. Prints seconds; with ``--real`` it also
ingests the real development files (default ``../shared/datasets/isbi2014-dev``)."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_isbi import write_isbi_fixture  # noqa: E402

from overlapseg.data.adapters import isbi2014  # noqa: E402
from overlapseg.data.adapters.isbi2014_edf import nuclei_from_annotation  # noqa: E402
from overlapseg.data.adapters.matlab import MatFile  # noqa: E402
from overlapseg.data.canonical import CanonicalDataset  # noqa: E402
from overlapseg.data.ingest import ingest  # noqa: E402


def _timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _load_all(path: Path) -> None:
    with MatFile(path) as mat:
        for key in mat.keys():
            try:
                cell = mat.cell(key)
                for i in range(len(cell)):
                    cell[i]
            except Exception:
                mat.array(key)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real", type=Path, nargs="?", const=Path("../shared/datasets/isbi2014-dev"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for v73 in (False, True):
            raw = tmp / f"v{'73' if v73 else '5'}"
            write_isbi_fixture(raw, n_images=args.images, size=args.size, cells=(4, 6),
                               v73=v73, subsets=("train",))
            t_load = _timed(lambda: _load_all(raw / "isbi_train_GT.mat"), args.repeats)
            t_read = _timed(lambda: list(isbi2014.read(raw)), args.repeats)
            print(f"isbi2014 {'v7.3' if v73 else 'v5  '}: {args.images} images {args.size}px "
                  f"4-6 cells: GT load {t_load:.3f} s, read() {t_read / args.images * 1e3:.1f} "
                  f"ms/image")
        gt = np.zeros((1024, 1024), np.uint8)
        rng = np.random.default_rng(0)
        for k in range(60):  # 40 closed outlines, 20 filled nuclei
            cx, cy = (int(v) for v in rng.integers(40, 984, 2))
            cv2.circle(gt, (cx, cy), int(rng.integers(8, 25)), 255, 1 if k < 40 else -1)
        t = _timed(lambda: nuclei_from_annotation(gt > 0), args.repeats)
        print(f"isbi2014-edf outline recovery: 1024x1024, 60 nuclei: {t:.3f} s/image")
        if args.real:
            for name in ("isbi_train.mat", "isbi_train_GT.mat"):
                print(f"real {name}: load {_timed(lambda: _load_all(args.real / name), 1):.3f} s")
            t0 = time.perf_counter()
            ingest("isbi2014", args.real, tmp / "real")
            dt = time.perf_counter() - t0
            ds = CanonicalDataset(tmp / "real")
            anns = ds.data["annotations"]
            n_cyto = sum(a["category_id"] == 1 for a in anns)
            orphans = sum(a["category_id"] == 2 and a["parent_id"] is None for a in anns)
            print(f"real ingest: {len(ds)} images, {n_cyto} cytoplasm, {len(anns) - n_cyto} "
                  f"nuclei ({orphans} without a cell) in {dt:.2f} s")


if __name__ == "__main__":
    main()

"""SEU-Net speed on this machine: seconds per training iteration and per predicted image.

Builds a small canonical dataset of random overlapping discs in a temp folder (no shared
data needed), then times ``overlapseg.train.seunet.train`` / ``predict`` for each head
configuration at the demo size (256x256 images) and, for one configuration, at the study
size (512x512 images). Prints one line per measurement.

    python benchmarks/bench_seunet.py [--threads 1] [--iterations 20] [--study]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.train import seunet as T
from overlapseg.train.api import DataRef

DEMO = {"base_channels": 8, "depth": 3, "crop": 128, "batch_size": 2, "lr": 1e-3,
        "tile": 256, "stride": 128}
STUDY = {"base_channels": 32, "depth": 4, "crop": 512, "batch_size": 4, "lr": 1e-5,
         "tile": 512, "stride": 256}


def make_dataset(root: Path, n: int, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    samples = []
    for i in range(n):
        image = np.full((size, size), 210.0)
        instances = []
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.integers(size // 8, size - size // 8, 2)
            r = rng.uniform(size / 12, size / 7)
            cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            nuc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r / 4) ** 2
            image[cell] *= 0.8
            image[nuc] *= 0.6
            instances.append(Instance(cell, "cytoplasm"))
            instances.append(Instance(nuc, "nucleus", len(instances) - 1))
        image += rng.normal(0, 4, image.shape)
        samples.append(Sample(f"b{i:02d}", np.clip(image, 0, 255).astype(np.uint8), instances))
    return write_canonical_dataset(samples, root)


def bench(data: Path, tmp: Path, tag: str, params: dict, iterations: int, n_pred: int) -> dict:
    out = tmp / tag
    T.train([DataRef(data)], None, out, {**params, "iterations": iterations,
                                         "checkpoint_every": iterations}, 0, "cpu")
    timing = json.loads((out / "timing.json").read_text())
    names = sorted(p.stem for p in (data / "images").glob("*.png"))[:n_pred]
    t = time.perf_counter()
    T.predict(out, DataRef(data, names), tmp / f"{tag}.json", tmp / f"sem_{tag}", params, "cpu")
    per_image = (time.perf_counter() - t) / len(names)
    return {"s_per_iteration": timing["seconds_per_iteration"], "s_per_image": round(per_image, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--study", action="store_true", help="also time the study size (slow on CPU)")
    ap.add_argument("--demo-skip", action="store_true", help="skip the demo-size measurements")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_str:
        tmp = Path(tmp_str)
        demo = make_dataset(tmp / "demo", 6, 256)
        configs = [("base", {}), ("2-head", {}), ("3-head", {}), ("4-head", {}),
                   ("2-head+ovl", {"heads": "2-head", "overlap": True}),
                   ("2-head+ovl-v4", {"heads": "2-head", "overlap": True, "map_variant": "v4"})]
        for tag, extra in [] if args.demo_skip else configs:
            params = {**DEMO, "heads": tag, "threads": args.threads, **extra}
            r = bench(demo, tmp, tag, params, args.iterations, 3)
            print(f"demo {tag:14s} crop {DEMO['crop']} batch {DEMO['batch_size']} "
                  f"base {DEMO['base_channels']} depth {DEMO['depth']} threads {args.threads}: "
                  f"{r['s_per_iteration']:.3f} s/iteration, {r['s_per_image']:.3f} s/256px image "
                  "(predict incl. watershed)", flush=True)
        if args.study:
            study = make_dataset(tmp / "study", 2, 512)
            params = {**STUDY, "heads": "2-head", "threads": args.threads}
            r = bench(study, tmp, "study", params, max(2, args.iterations // 5), 1)
            print(f"study 2-head crop 512 batch 4 base 32 depth 4 threads {args.threads}: "
                  f"{r['s_per_iteration']:.3f} s/iteration, {r['s_per_image']:.3f} s/512px image",
                  flush=True)


if __name__ == "__main__":
    main()

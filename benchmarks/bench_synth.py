"""Images per second of CCCE (both modes) and copy-paste at 512x512 on one core.

Sources: 8 demo-renderer images (512 px, 2-6 cells each). Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_synth.py [--n 40]
Prints generation rate (in memory) and the rate including writing the canonical dataset.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.data.demo import DemoConfig, render_image
from overlapseg.synth import ccce, copypaste
from overlapseg.synth.sources import load_source


def demo_samples(n: int = 8, size: int = 512, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = render_image(DemoConfig(size=size), rng)
        inst = [Instance(c, "cytoplasm") for c in r.cells]
        inst += [Instance(m, "nucleus", k) for k, m in enumerate(r.nuclei)]
        out.append(Sample(f"s{i}", r.image, inst))
    return out


def rate(gen, n: int) -> float:
    t0 = time.perf_counter()
    count = sum(1 for _ in gen)
    assert count == n
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    samples = demo_samples()
    sources = [load_source(s) for s in samples]
    runs = {
        "ccce divide": (ccce.generate_ccce, ccce.CCCEConfig(mode="divide", th=0.35)),
        "ccce absorbance": (ccce.generate_ccce, ccce.CCCEConfig(mode="absorbance", th=0.35)),
        "copypaste": (copypaste.generate_copypaste,
                      copypaste.CopyPasteConfig(n_cells=(4, 8), max_source_overlap=0.5)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, (gen, cfg) in runs.items():
            mem = rate(gen(sources, args.n, 0, cfg), args.n)
            t0 = time.perf_counter()
            write_canonical_dataset(gen(sources, args.n, 0, cfg), Path(tmp) / label.replace(" ", "_"))
            disk = args.n / (time.perf_counter() - t0)
            print(f"{label:16s} 512x512: {mem:6.1f} images/s generated, {disk:6.1f} images/s "
                  f"incl. writing PNG + COCO RLE ({args.n} images)")


if __name__ == "__main__":
    main()

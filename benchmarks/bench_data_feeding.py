"""Data feeding vs. model step for the Mask R-CNN trainer at 512 px (issue 10). Prints numbers.

Renders a small synthetic canonical dataset (16 images 512x512, ~10 overlapping cells each,
``overlapseg.data.demo``), then measures on this machine:

* data: images/s delivered by ``Trainer._loader`` (the DataLoader over ``sample_batch``:
  sampling, augmentation, targets) with 0 and 2 worker processes, consuming the batches only;
* model: seconds per training iteration (``Trainer.training_step``: forward + backward +
  optimiser step, batch 2) for torchvision's default head widths and for the CPU overlay's
  slim heads (config/study-cpu.yaml: fpn 64, mask 64, box 256, ROI sampling 128/500);

and the ratio data images/s / model images/s (> 1: data preparation is not the bottleneck).
It also asserts that 0 and 2 workers give bitwise-identical batches. Torch threads: 2.

    python benchmarks/bench_data_feeding.py [--iterations 30] [--steps 4] [--device cpu]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.data.demo import DemoConfig, render_dataset
from overlapseg.train.base import DataRef, TrainInputs, seed_everything
from overlapseg.train.maskrcnn import MaskRCNNTrainer

SLIM = {"fpn_channels": 64, "mask_head_channels": 64, "box_head_dim": 256,
        "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 500}


def make_dataset(root: Path, n_images: int, size: int, seed: int) -> tuple[Path, float]:
    cfg = DemoConfig(n_images=n_images, size=size, min_cells=9, max_cells=11,
                     cell_radius=(0.07, 0.11), seed=seed)
    rendered = render_dataset(cfg)
    samples = []
    for k, r in enumerate(rendered):
        inst = [Instance(c, "cytoplasm") for c in r.cells]
        inst += [Instance(n, "nucleus", parent=j) for j, n in enumerate(r.nuclei)]
        samples.append(Sample(f"img{k:03d}", r.image, inst, source="bench"))
    write_canonical_dataset(samples, root)
    return root, float(np.mean([len(r.cells) for r in rendered]))


def trainer_for(root: Path, device: str, **params) -> MaskRCNNTrainer:
    return MaskRCNNTrainer(params={"threads": 2, **params}, seed=0, device=device,
                           inputs=TrainInputs(train=[DataRef(root)]))


def batch_digest(batch) -> str:
    """sha256 over every tensor (dtype, shape, bytes) of one iteration's micro-batches."""
    h = hashlib.sha256()
    for images, targets in batch:
        for t in [*images, *(v for tg in targets for v in (tg["boxes"], tg["labels"], tg["masks"]))]:
            t = t.contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def time_data(root: Path, device: str, workers: int, iterations: int) -> tuple[float, float, float, list[str]]:
    """(images/s over all iterations incl. worker start-up, seconds to the first batch,
    images/s over the second half of the iterations, digests of every batch)."""
    tr = trainer_for(root, device, workers=workers, iterations=iterations)
    data = tr.load_data(tr.inputs.train)
    n_img = tr.params["batch_size"] * tr.params["accumulate"]
    stamps = []
    t0 = time.perf_counter()
    for _batch in tr._loader(data, 0):
        stamps.append(time.perf_counter())
    total = iterations * n_img / (stamps[-1] - t0)
    mid = iterations // 2
    steady = (iterations - 1 - mid) * n_img / (stamps[-1] - stamps[mid])
    digests = [batch_digest(b) for b in tr._loader(data, 0)]  # separate, untimed pass
    return total, stamps[0] - t0, steady, digests


def time_steps(root: Path, device: str, steps: int, params: dict) -> float:
    """Seconds per training iteration (after one warm-up step) on fixed pre-sampled batches."""
    tr = trainer_for(root, device, iterations=steps + 1, **params)
    torch.set_num_threads(2)
    seed_everything(tr.seed, device)
    data = tr.load_data(tr.inputs.train)
    batches = [tr.to_device(b) for b in tr._loader(data, 0)]
    model = tr.build_model()
    tr.on_data_loaded(model, data)
    model = model.to(device).train()
    opts = tr.configure_optimizers(model)
    scaler = torch.amp.GradScaler("cuda", enabled=tr.amp_dtype() == torch.float16)
    times = []
    for it, batch in enumerate(batches):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tr.training_step(model, batch, opts, scaler, it)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=30, help="data-loader iterations per worker count")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per model (after 1 warm-up)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(2)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root, cells = make_dataset(Path(tmp) / "data", args.images, args.size, seed=0)
        print(f"dataset: {args.images} images {args.size}x{args.size}, {cells:.1f} cells (+ nuclei) "
              f"per image, rendered in {time.perf_counter() - t0:.1f} s")
        data = {}
        for w in (0, 2):
            data[w] = time_data(root, args.device, w, args.iterations)
        assert data[0][3] == data[2][3], "batches differ between 0 and 2 workers"
        print(f"batches bitwise identical for 0 and 2 workers: {len(data[0][3])} iterations checked")
        model = {name: time_steps(root, args.device, args.steps, params)
                 for name, params in (("default heads (256/256/1024)", {}), ("slim heads (64/64/256)", SLIM))}
    batch = MaskRCNNTrainer.DEFAULTS["batch_size"]
    load1 = os.getloadavg()
    print(f"\ndevice {args.device}, torch threads 2, batch {batch}, {os.cpu_count()} CPU cores; "
          f"load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    print(f"\n{'data path (Trainer._loader)':<32}{'images/s':>10}{'1st batch s':>13}{'images/s 2nd half':>19}")
    for w, (total, first, steady, _) in data.items():
        print(f"{f'workers={w}':<32}{total:>10.1f}{first:>13.2f}{steady:>19.1f}")
    print(f"\n{'model step (fwd+bwd+opt)':<32}{'s/iter':>10}{'images/s':>10}"
          f"{'data/model w=0':>16}{'data/model w=2':>16}")
    for name, s in model.items():
        ips = batch / s
        print(f"{name:<32}{s:>10.3f}{ips:>10.2f}{data[0][0] / ips:>16.1f}{data[2][0] / ips:>16.1f}")
    worst = min(d[0] for d in data.values()) / max(batch / s for s in model.values())
    print(f"\ndata preparation {'is not' if worst > 1 else 'IS'} the bottleneck "
          f"(worst data/model ratio {worst:.1f})")


if __name__ == "__main__":
    main()

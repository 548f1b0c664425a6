"""DoNet training-step cost relative to Mask R-CNN on this machine.

Times one training step (forward + backward, no optimiser) at batch 2 on 256 px synthetic
demo images with six overlapping cells, with the demo's slim widths, for plain Mask R-CNN
(``build_maskrcnn``) and each DoNet ablation row (``build_donet`` with the same params).
Models are stepped round-robin so that a change in machine load hits every variant alike.
Prints one line per variant: median and mean seconds per step and the ratio to Mask R-CNN.

    python benchmarks/bench_donet.py [--threads 1] [--steps 10] [--warmup 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from overlapseg.data.demo import DemoConfig, render_image
from overlapseg.models.donet import ABLATIONS, build_donet
from overlapseg.models.maskrcnn import build_maskrcnn
from overlapseg.train.maskrcnn import image_tensor, to_target

DEMO = {"depth": 18, "image_size": 256, "fpn_channels": 64, "mask_head_channels": 64,
        "box_head_dim": 256, "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 500}
ROWS = {"+H_o": "h_o", "+DRM (H_o+H_m)": "drm", "+DRM+FU": "drm_fu", "+DRM+CRM": "drm_crm",
        "+DRM+CRM+MRP": "donet"}


def make_batches(n_batches: int, device: str, seed: int = 0):
    """Batches of two demo images with six cells each (cytoplasm label 1, nucleus label 2)."""
    cfg = DemoConfig(size=DEMO["image_size"], min_cells=6, max_cells=6)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        images, targets = [], []
        for _ in range(2):
            r = render_image(cfg, rng)
            masks = np.concatenate([r.cells, r.nuclei])
            labels = np.array([1] * len(r.cells) + [2] * len(r.nuclei), np.int64)
            images.append(image_tensor(r.image.astype(np.float32) / 255).to(device))
            targets.append({k: v.to(device) for k, v in to_target(masks, labels).items()})
        batches.append((images, targets))
    return batches


def step(model, batch) -> float:
    images, targets = batch
    t = time.perf_counter()
    losses = model(images, targets)
    sum(losses.values()).backward()
    if images[0].is_cuda:
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = make_batches(2, args.device)
    cells = [len(t["labels"]) // 2 for _, ts in batches for t in ts]
    models = {}
    torch.manual_seed(0)  # same backbone, RPN and box/mask heads in every variant
    models["Mask R-CNN"] = build_maskrcnn(**DEMO)  # the two detector kwargs pass through to MaskRCNN
    for label, row in ROWS.items():
        torch.manual_seed(0)
        models[label] = build_donet({**DEMO, **ABLATIONS[row]})
    times = {label: [] for label in models}
    for model in models.values():
        model.to(args.device).train()
    for i in range(args.warmup + args.steps):
        for label, model in models.items():
            seconds = step(model, batches[i % len(batches)])
            if i >= args.warmup:
                times[label].append(seconds)
    base = statistics.median(times["Mask R-CNN"])
    print(f"train step, batch 2, {DEMO['image_size']} px, cells per image {cells}, "
          f"{args.device} threads {args.threads}, {args.steps} steps after {args.warmup} warm-up")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"{label:16s} median {med:.3f} s  mean {statistics.mean(ts):.3f} s  x{med / base:.2f}")


if __name__ == "__main__":
    main()

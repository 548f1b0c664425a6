"""IRNet training-step cost relative to plain Mask R-CNN on the same batch (issue 15 goal: <= 1.3x).

Times forward + backward + SGD step (median over ``--steps`` after two warm-up steps, steps
of the models interleaved; process CPU time is the robust figure on a shared machine) of
Mask R-CNN and of IRNet with both modules, without the IRM and without the DRM, on one batch
of synthetic 256 px images of overlapping discs (cells with nuclei), at the demo widths, and
one eval forward of the batch. "maskrcnn" is IRNet with both modules off, which
tests/test_irnet.py checks is bitwise torchvision's Mask R-CNN. Prints one line per model.

    python benchmarks/bench_irnet.py [--threads 1] [--steps 8] [--size 256] [--cells 6]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from overlapseg.models.irnet import IRNET_ABLATIONS, build_irnet

DEMO = {"depth": 18, "anchor_sizes": [16, 32, 64, 128, 256],
        "fpn_channels": 64, "mask_head_channels": 64, "box_head_dim": 256,
        "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 2000, "detections_per_image": 100}


def synthetic_batch(n: int, size: int, cells: int, seed: int = 0):
    """Grey images of overlapping dark discs with darker nuclei, with torchvision targets."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, targets = [], []
    for _ in range(n):
        image = np.full((size, size), 0.85, np.float32)
        masks, labels = [], []
        for _ in range(cells):
            cy, cx = rng.integers(size // 6, size - size // 6, 2)
            r = rng.uniform(size / 12, size / 7)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            for mask, label, shade in ((d2 <= r * r, 1, 0.8), (d2 <= (r / 4) ** 2, 2, 0.6)):
                image[mask] *= shade
                masks.append(mask)
                labels.append(label)
        image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
        masks = np.stack(masks)
        boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                 for ys, xs in (np.nonzero(m) for m in masks)]
        images.append(torch.from_numpy(image).expand(3, -1, -1).contiguous())
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels), "masks": torch.from_numpy(masks.astype(np.uint8))})
    return images, targets


MODELS = ("maskrcnn", "irnet_wo_irm", "irnet_wo_drm", "irnet")


def train_step(model, optimizer, images, targets, seed: int) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one forward + backward + SGD step."""
    torch.manual_seed(seed)  # same ROI sampling for every model
    cpu, wall = time.process_time(), time.perf_counter()
    optimizer.zero_grad()
    sum(model(images, targets).values()).backward()
    optimizer.step()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cells", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, targets = synthetic_batch(2, args.size, args.cells)
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_irnet({**DEMO, "image_size": args.size, **IRNET_ABLATIONS[name]}).train()
        models[name] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    # steps interleaved across models so that load from other processes hits all alike
    times = {name: [] for name in MODELS}
    for it in range(args.steps + 2):
        for name, (model, optimizer) in models.items():
            times[name].append(train_step(model, optimizer, images, targets, it))
    cpu = {name: statistics.median(t[0] for t in times[name][2:]) for name in MODELS}
    wall = {name: statistics.median(t[1] for t in times[name][2:]) for name in MODELS}
    for name, (model, _) in models.items():
        model.eval()
        start = time.process_time()
        with torch.no_grad():
            model(images)
        infer = time.process_time() - start
        ratio, wall_ratio = cpu[name] / cpu["maskrcnn"], wall[name] / wall["maskrcnn"]
        print(f"{name:13s} train step cpu {cpu[name]:6.3f} s ({ratio:4.2f}x Mask R-CNN)  "
              f"wall {wall[name]:6.3f} s ({wall_ratio:4.2f}x)  eval batch cpu {infer:6.3f} s")


if __name__ == "__main__":
    main()

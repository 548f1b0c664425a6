"""CC network speed on this machine, relative to overlapseg's Mask R-CNN on the same batch.

Builds one synthetic batch (2 grey images, ~6 overlapping cells with nuclei each) and times
a training step (forward, backward, SGD step) of the CC network (``CC_DEFAULTS``) and of the
small Mask R-CNN the CPU studies use, then inference images/s for both. An untrained CC
network finds almost no keypoints above its threshold, so inference is also timed in a
worst case: every peak kept (``max_keypoints`` candidates) and loose grouping, which is the
cost of decoding a very crowded image. Prints one line per measurement.

    python benchmarks/bench_ccnet.py [--threads 1] [--steps 5] [--size 256] [--images 4]
"""
from __future__ import annotations

import argparse
import time

import torch

from overlapseg.models.ccnet import CC_DEFAULTS, build_ccnet
from overlapseg.models.maskrcnn import build_maskrcnn

MASKRCNN = {"depth": 18, "fpn_channels": 64, "mask_head_channels": 64, "box_head_dim": 256,
            "box_batch_size_per_image": 128}


def synthetic_batch(n: int, size: int, seed: int = 0):
    """Grey images of overlapping elliptical cells with nuclei, and their torchvision targets."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        image = torch.full((size, size), 0.85)
        masks, labels = [], []
        for _ in range(int(torch.randint(5, 8, (1,), generator=g))):
            cy, cx = (torch.rand(2, generator=g) * size * 0.6 + size * 0.2).tolist()
            ry, rx = (torch.rand(2, generator=g) * size / 10 + size / 12).tolist()
            cell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            nucleus = ((yy - cy) / (ry / 3)) ** 2 + ((xx - cx) / (rx / 3)) ** 2 <= 1
            image[cell] *= 0.8
            image[nucleus] *= 0.6
            masks += [cell, nucleus]
            labels += [1, 2]
        masks = torch.stack(masks).to(torch.uint8)
        boxes = []
        for m in masks:
            ys, xs = torch.nonzero(m, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        image = (image + 0.02 * torch.randn(size, size, generator=g)).clamp(0, 1)
        images.append(image.expand(3, -1, -1).contiguous())
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor(labels), "masks": masks})
    return images, targets


def time_train_step(model, images, targets, steps: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    if hasattr(model, "set_progress"):
        model.set_progress(0.75)  # boundary branch on: the costlier half of training

    def step():
        losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


@torch.no_grad()
def time_inference(model, images, n: int) -> tuple[float, float]:
    model.eval()
    model([images[0]])  # warm-up
    t = time.perf_counter()
    found = 0
    for i in range(n):
        found += len(model([images[i % len(images)]])[0]["boxes"])
    return n / (time.perf_counter() - t), found / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--images", type=int, default=4, help="images timed for inference")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, targets = synthetic_batch(2, args.size)
    print(f"batch: 2 x {args.size} px, {[len(t['boxes']) for t in targets]} instances, "
          f"threads {args.threads}")
    cc = build_ccnet({"image_size": args.size})
    mr = build_maskrcnn(image_size=args.size, **MASKRCNN)
    for name, model in (("ccnet", cc), ("maskrcnn", mr)):
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    t_cc = time_train_step(cc, images, targets, args.steps)
    t_mr = time_train_step(mr, images, targets, args.steps)
    print(f"train step: ccnet {t_cc:.3f} s, maskrcnn {t_mr:.3f} s, ratio {t_cc / t_mr:.2f}")
    for name, model in (("ccnet", cc), ("maskrcnn", mr)):
        ips, found = time_inference(model, images, args.images)
        print(f"inference {name}: {ips:.2f} images/s ({found:.0f} detections/image, untrained)")
    cc.kd.heatmap_threshold, cc.kd.group_tolerance = 0.0, 1e3
    ips, found = time_inference(cc, images, args.images)
    print(f"inference ccnet worst case ({CC_DEFAULTS['max_keypoints']} keypoints, loose grouping): "
          f"{ips:.2f} images/s ({found:.0f} detections/image)")


if __name__ == "__main__":
    main()

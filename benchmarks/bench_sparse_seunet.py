"""SparseSEU-Net speed on this machine against the plain SEU-Net it is built on and Mask R-CNN.

Times one training step (forward, loss, backward, AdamW step) of
``overlapseg.models.sparse_seunet`` (vanilla and each variant) and of
``overlapseg.models.seunet.build_seunet`` (2-head, per-head BCE) at the same crop (128 px,
batch 4, base_channels 8, depth 3), then inference images/s at 256 px (SparseSEU-Net:
``predict_instances``, i.e. forward + scoring + binary masks; SEU-Net: forward + sigmoid,
the watershed not included). Mask R-CNN (R18-FPN, GroupNorm, the CPU recipe's slim heads) is
timed on the same batch (SGD step; boxes from the masks). Batches are random overlapping discs (cells with nuclei) drawn
with a fixed seed; no data files needed. Prints one line per measurement.

    python benchmarks/bench_sparse_seunet.py [--threads 1] [--steps 3] [--inst-dim 32 --mask-dim 32]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from overlapseg.models.seunet import build_seunet
from overlapseg.models.sparse_seunet import (build_sparse_seunet, predict_instances,
                                             sparse_losses, sparse_params)

COMMON = {"base_channels": 8, "depth": 3}
VARIANTS = {
    "vanilla": {},
    "overlap+attn": {"overlap_head": True, "attention_map": True},
    "multi-level": {"multi_level": True},
    "iou-objectness": {"iou_objectness": True},
}


def make_batch(batch: int, size: int, rng: np.random.Generator):
    """Grey images (B, 1, S, S), instance targets, semantic targets (B, 2, S, S)."""
    yy, xx = np.mgrid[:size, :size]
    images, targets, semantic = [], [], []
    for _ in range(batch):
        image = np.full((size, size), 0.82, np.float32)
        masks, labels = [], []
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.integers(size // 8, size - size // 8, 2)
            r = rng.uniform(size / 12, size / 7)
            cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            nucleus = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r / 4) ** 2
            image[cell] *= 0.8
            image[nucleus] *= 0.6
            masks += [cell, nucleus]
            labels += [1, 2]
        images.append(np.clip(image + rng.normal(0, 0.015, image.shape), 0, 1))
        masks = np.stack(masks)
        targets.append({"masks": torch.from_numpy(masks), "labels": torch.tensor(labels)})
        semantic.append(np.stack([masks[0::2].any(0), masks[1::2].any(0)]))
    return (torch.from_numpy(np.stack(images)[:, None].astype(np.float32)), targets,
            torch.from_numpy(np.stack(semantic).astype(np.float32)))


def time_steps(step, n: int) -> float:
    step()  # warm-up (allocations, first-call overheads)
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n-instances", type=int, default=100)
    ap.add_argument("--inst-dim", type=int, default=None, help="default: SPARSE_DEFAULTS")
    ap.add_argument("--mask-dim", type=int, default=None, help="default: SPARSE_DEFAULTS")
    ap.add_argument("--infer-size", type=int, default=256)
    ap.add_argument("--infer-images", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, targets, semantic = make_batch(args.batch, args.crop, np.random.default_rng(0))
    prob_map = torch.rand(args.batch, args.crop, args.crop,
                          generator=torch.Generator().manual_seed(0))
    gray = make_batch(1, args.infer_size, np.random.default_rng(1))[0][0, 0].numpy()
    where = (f"crop {args.crop} batch {args.batch} base {COMMON['base_channels']} depth "
             f"{COMMON['depth']} threads {args.threads}")

    seunet = build_seunet({"heads": "2-head", **COMMON})
    opt = torch.optim.AdamW(seunet.parameters(), lr=1e-5, weight_decay=1e-5)

    def seunet_step():
        loss = F.binary_cross_entropy_with_logits(seunet(x), semantic)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    base = time_steps(seunet_step, args.steps)
    print(f"seunet 2-head            {where}: {base:.3f} s/step", flush=True)
    seunet.eval()
    with torch.no_grad():
        t_in = torch.from_numpy(gray)[None, None]
        per_image = time_steps(lambda: torch.sigmoid(seunet(t_in)), args.infer_images)
    print(f"seunet 2-head            inference {args.infer_size} px: {1 / per_image:.2f} images/s "
          "(forward + sigmoid, no watershed)", flush=True)

    from overlapseg.train.maskrcnn import image_tensor, to_target
    from overlapseg.train.base import get_trainer

    slim = {"fpn_channels": 64, "mask_head_channels": 64, "box_head_dim": 256,
            "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 500}
    det = get_trainer("maskrcnn")({"depth": 18, "image_size": args.crop, **slim}, 0, "cpu")
    detector = det.build_model().train()
    det_opt = torch.optim.SGD(detector.parameters(), lr=1e-4, momentum=0.9)
    det_images = [image_tensor(x[i, 0].numpy()) for i in range(len(x))]
    det_targets = [to_target(t["masks"].numpy(), t["labels"].numpy()) for t in targets]

    def maskrcnn_step():
        loss = sum(detector(det_images, det_targets).values())
        det_opt.zero_grad(set_to_none=True)
        loss.backward()
        det_opt.step()

    seconds = time_steps(maskrcnn_step, args.steps)
    print(f"maskrcnn R18 slim heads  {where}: {seconds:.3f} s/step ({seconds / base:.1f}x seunet)",
          flush=True)
    detector.eval()
    with torch.no_grad():
        t_in = [image_tensor(gray)]
        per_image = time_steps(lambda: detector(t_in), args.infer_images)
    print(f"maskrcnn R18 slim heads  inference {args.infer_size} px: {1 / per_image:.2f} images/s", flush=True)

    for name, switches in VARIANTS.items():
        extra = {k: v for k, v in (("inst_dim", args.inst_dim), ("mask_dim", args.mask_dim))
                 if v is not None}
        p = sparse_params({**COMMON, **switches, **extra, "n_instances": args.n_instances})
        model = build_sparse_seunet(p)
        opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])

        def sparse_step():
            losses = sparse_losses(model(x), targets, p, prob_map=prob_map)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()

        seconds = time_steps(sparse_step, args.steps)
        tag = f"sparse {name:16s} N {p['n_instances']} inst {p['inst_dim']} mask {p['mask_dim']}"
        print(f"{tag} {where}: {seconds:.3f} s/step ({seconds / base:.1f}x seunet)", flush=True)
        model.eval()
        per_image = time_steps(lambda: predict_instances(model, gray, p), args.infer_images)
        print(f"{tag} inference {args.infer_size} px: {1 / per_image:.2f} images/s "
              "(forward + scores + masks)", flush=True)


if __name__ == "__main__":
    main()

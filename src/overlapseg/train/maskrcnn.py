"""Training and inference of the Mask R-CNN baseline (trainer contract in ``train.api``)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from overlapseg.data.canonical import CATEGORY_IDS, CanonicalDataset, encode_mask
from overlapseg.data.preprocess import to_float_gray
from overlapseg.data.semantic import semantic_targets
from overlapseg.models.maskrcnn import build_maskrcnn
from overlapseg.train.api import DataRef
from overlapseg.train.common import (LossLog, check_finite, iteration_rng, load_checkpoint,
                                     save_checkpoint, seed_everything, set_threads)
from overlapseg.utils.io import atomic_dir, atomic_path, write_json

log = logging.getLogger(__name__)

DEFAULTS = {
    "depth": 18,
    "image_size": 512,
    "anchor_sizes": [16, 32, 64, 128, 256],
    "pretrained_backbone": None,
    # head sizes (torchvision defaults; smaller for CPU budgets) and ROI sampling
    "fpn_channels": 256,
    "mask_head_channels": 256,
    "box_head_dim": 1024,
    "box_batch_size_per_image": 512,
    "rpn_post_nms_top_n_train": 2000,
    "iterations": 300,
    "batch_size": 2,
    "optimizer": "sgd",
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup": 50,
    "lr_steps": [0.75, 0.9],  # fractions of training where lr drops 10x
    "grad_clip": 10.0,
    "checkpoint_every": 100,
    "augment": {"flip": True, "rot90": True, "brightness": 0.1, "contrast": 0.1},
    "score_threshold": 0.05,  # detections kept in the COCO results
    "semantic_score": 0.5,  # detections used to build the semantic maps
    "mask_threshold": 0.5,
    "threads": None,
}


def resolve_params(params: dict | None) -> dict:
    unknown = set(params or {}) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"unknown maskrcnn params: {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    return {**DEFAULTS, **(params or {})}


# ----------------------------------------------------------------------------- data
class InstanceData:
    """Images and instance targets of several canonical datasets, loaded once into memory."""

    def __init__(self, refs: list[DataRef]):
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for ref in refs:
            ds = CanonicalDataset(ref.root)
            for name in ref.names if ref.names is not None else ds.names:
                image = to_float_gray(ds.load_image(name))
                masks, labels = [], []
                for category, cid in CATEGORY_IDS.items():
                    m = ds.masks(name, category)
                    masks.append(m)
                    labels += [cid] * len(m)
                self.items.append((image, np.concatenate(masks), np.asarray(labels, np.int64)))
        if not self.items:
            raise ValueError(f"no training images in {[str(r.root) for r in refs]}")

    def __len__(self) -> int:
        return len(self.items)


def augment(image: np.ndarray, masks: np.ndarray, rng: np.random.Generator, cfg: dict):
    """Flips, 90-degree rotations, brightness/contrast jitter (same geometry for masks)."""
    if cfg.get("flip"):
        if rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        if rng.random() < 0.5:
            image, masks = image[::-1], masks[:, ::-1]
    if cfg.get("rot90"):
        k = int(rng.integers(4))
        image, masks = np.rot90(image, k), np.rot90(masks, k, axes=(1, 2))
    b, c = cfg.get("brightness", 0), cfg.get("contrast", 0)
    if b or c:
        mean = image.mean()
        image = (image - mean) * (1 + rng.uniform(-c, c)) + mean + rng.uniform(-b, b)
        image = np.clip(image, 0, 1)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(masks)


def to_target(masks: np.ndarray, labels: np.ndarray) -> dict:
    keep = masks.reshape(len(masks), -1).any(axis=1)
    masks, labels = masks[keep], labels[keep]
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).unsqueeze(0).expand(3, -1, -1).contiguous()


# ----------------------------------------------------------------------------- training
def build_from_params(p: dict, pretrained: bool):
    """The model a params dict describes (inference skips the pretrained file: weights come from model.pt)."""
    return build_maskrcnn(p["depth"], p["image_size"], p["anchor_sizes"],
                          p["pretrained_backbone"] if pretrained else None,
                          fpn_channels=p["fpn_channels"], mask_head_channels=p["mask_head_channels"],
                          box_head_dim=p["box_head_dim"],
                          box_batch_size_per_image=p["box_batch_size_per_image"],
                          rpn_post_nms_top_n_train=p["rpn_post_nms_top_n_train"])


def _make_optimizer(model, p: dict):
    params = [q for q in model.parameters() if q.requires_grad]
    if p["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
    if p["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=p["lr"], weight_decay=p["weight_decay"])
    raise ValueError(f"unknown optimizer {p['optimizer']!r} (sgd or adamw)")


def _lr_factor(p: dict):
    total, warmup = p["iterations"], p["warmup"]
    steps = [int(f * total) for f in p["lr_steps"]]

    def factor(it: int) -> float:
        warm = min(1.0, (it + 1) / warmup) if warmup else 1.0
        return warm * 0.1 ** sum(it >= s for s in steps)
    return factor


def train(train_sets: list[DataRef], val_set: DataRef | None, out_dir: Path, params: dict,
          seed: int, device: str = "cpu") -> Path:
    """Train from scratch (or from a checkpoint in ``out_dir``); writes ``out_dir/model.pt``."""
    p = resolve_params(params)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    set_threads(p["threads"])
    seed_everything(seed, device)
    data = InstanceData(train_sets)
    model = build_from_params(p, pretrained=True).to(device)
    optimizer = _make_optimizer(model, p)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(p))
    ckpt = out_dir / "checkpoints" / "last.pt"
    start = load_checkpoint(ckpt, model, optimizer, scheduler) if ckpt.exists() else 0
    if start:
        log.info("resuming %s from iteration %d", out_dir, start)
    loss_names = ["loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    loss_log = LossLog(out_dir / "log.csv", [*loss_names, "loss", "lr"], resume_from=start)
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    model.train()
    t0 = time.time()
    for it in tqdm(range(start, p["iterations"]), desc=f"train {out_dir.name}", initial=start,
                   total=p["iterations"], mininterval=10):
        rng = iteration_rng(seed, it)
        batch = rng.choice(len(data), size=min(p["batch_size"], len(data)), replace=False)
        images, targets = [], []
        for idx in batch:
            image, masks, labels = data.items[idx]
            image, masks = augment(image, masks, rng, p["augment"])
            images.append(image_tensor(image).to(device))
            targets.append({k: v.to(device) for k, v in to_target(masks, labels).items()})
        with torch.autocast("cuda", enabled=use_amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        check_finite(loss, out_dir, it, losses)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), p["grad_clip"])
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_log.write(it, {**{k: losses[k].item() for k in loss_names}, "loss": loss.item(),
                            "lr": optimizer.param_groups[0]["lr"]})
        if (it + 1) % p["checkpoint_every"] == 0 and it + 1 < p["iterations"]:
            save_checkpoint(ckpt, model, optimizer, scheduler, it + 1)
    final = out_dir / "model.pt"
    with atomic_path(final) as tmp:
        torch.save({"model": model.state_dict(), "params": p, "seed": seed, "kind": "maskrcnn"}, tmp)
    write_json(out_dir / "train_info.json", {"iterations": p["iterations"], "images": len(data),
                                             "seconds": round(time.time() - t0, 1), "device": device})
    return final


# ----------------------------------------------------------------------------- inference
def load_model(model_dir: Path, device: str):
    state = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=False)
    p = state["params"]
    model = build_from_params(p, pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), p


@torch.no_grad()
def predict(model_dir: Path, data: DataRef, out_json: Path, semantic_dir: Path,
            params: dict | None = None, device: str = "cpu") -> None:
    """COCO results for ``data`` plus semantic maps derived from the confident instances."""
    model, p = load_model(model_dir, device)
    p = {**p, **{k: v for k, v in (params or {}).items() if k in ("score_threshold", "semantic_score",
                                                                    "mask_threshold", "threads")}}
    set_threads(p.get("threads"))
    ds = CanonicalDataset(data.root)
    names = data.names if data.names is not None else ds.names
    cyto, nuc = CATEGORY_IDS["cytoplasm"], CATEGORY_IDS["nucleus"]
    results = []
    with atomic_dir(semantic_dir) as sem_tmp:
        for name in tqdm(names, desc="predict", mininterval=10):
            image = to_float_gray(ds.load_image(name))
            out = model([image_tensor(image).to(device)])[0]
            scores = out["scores"].cpu().numpy()
            labels = out["labels"].cpu().numpy()
            masks = (out["masks"][:, 0] >= p["mask_threshold"]).cpu().numpy()
            image_id = ds.images[name]["id"]
            for m, s, lab in zip(masks, scores, labels):
                if s < p["score_threshold"] or not m.any():
                    continue
                results.append({"image_id": image_id, "category_id": int(lab),
                                "segmentation": encode_mask(m), "score": round(float(s), 6)})
            confident = scores >= p["semantic_score"]
            sem = semantic_targets(masks[confident & (labels == cyto)], masks[confident & (labels == nuc)])
            np.savez_compressed(sem_tmp / f"{name}.npz", **sem)
    with atomic_path(out_json) as tmp:
        write_json(tmp, results)

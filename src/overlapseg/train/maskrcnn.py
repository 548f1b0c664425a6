"""Training and inference of the Mask R-CNN baseline (a :class:`~overlapseg.train.base.Trainer`).

Every target carries its source's annotation scope (``annotated``): on images of a nuclei-only
source the detectors train the cytoplasm class neither as object nor as background
(:mod:`overlapseg.models.scope`; DoNet, IRNet and the CC framework share this loop).
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import numpy as np
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

from overlapseg.data.canonical import CATEGORY_IDS, CanonicalDataset, encode_mask
from overlapseg.data.preprocess import to_float_gray
from overlapseg.data.semantic import semantic_targets
from overlapseg.models.maskrcnn import MASKRCNN_DEFAULTS as NETWORK_DEFAULTS
from overlapseg.models.maskrcnn import build_maskrcnn_from_params
from overlapseg.models.scope import SCOPE_KEY, scope_tensor
from overlapseg.train.base import DataRef, Trainer, register

log = logging.getLogger(__name__)

#: training/inference params shared by every detector trained with this loop
DETECTION_DEFAULTS = {
    **Trainer.DEFAULTS,
    "image_size": 512,
    # scratch | imagenet | {file: PATH} | {from: EXPERIMENT, part: all|backbone}
    # (overlapseg.models.weights; the workflow hands the file over as TrainInputs.init_file)
    "init": "scratch",
    "iterations": 300,
    "batch_size": 2,
    "optimizer": "sgd",
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup": 50,
    "warmup_factor": None,  # lr factor at iteration 0 of the linear warm-up (null: 1/warmup)
    "bias_lr_factor": 1.0,  # biases learn at lr x this (IRNet: 2)
    "lr_steps": [0.75, 0.9],  # fractions of training where lr drops 10x
    "grad_clip": 10.0,
    "checkpoint_every": 100,
    "augment": {"flip": True, "rot90": True, "brightness": 0.1, "contrast": 0.1},
    "score_threshold": 0.05,  # detections kept in the COCO results
    "semantic_score": 0.5,  # detections used to build the semantic maps
    "mask_threshold": 0.5,
    # inference at native scale; images with a side above max_side are cut into overlapping
    # tiles whose detections are kept only by the tile owning their box centre (no seam duplicates)
    "max_side": 2048,
    "tile_overlap": 128,
}

#: the network's keys (:data:`overlapseg.models.maskrcnn.MASKRCNN_DEFAULTS`) on the loop's
MASKRCNN_DEFAULTS = {**DETECTION_DEFAULTS, **NETWORK_DEFAULTS}

#: per-image limits of torchvision-style detectors (attributes of any submodule) that are set
#: for an image_size x image_size image and scale with the area of the image at inference
AREA_CAPS = ("detections_per_img", "detections_per_image", "max_keypoints")


# ----------------------------------------------------------------------------- data
class InstanceData:
    """Images and instance targets of several canonical datasets, loaded once into memory;
    ``scopes[i]``: the categories item ``i``'s source annotates (``DataRef.scope``)."""

    def __init__(self, refs: list[DataRef]):
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.scopes: list[tuple[str, ...]] = []
        self.source_sizes: list[int] = []  # items per source, in order (inputs.mix)
        for ref in refs:
            before = len(self.items)
            ds = CanonicalDataset(ref.root)
            scope = ref.scope(ds)
            for name in ref.names if ref.names is not None else ds.names:
                image = to_float_gray(ds.load_image(name))
                masks, labels = [], []
                for category, cid in CATEGORY_IDS.items():
                    m = ds.masks(name, category)
                    masks.append(m)
                    labels += [cid] * len(m)
                self.items.append((image, np.concatenate(masks), np.asarray(labels, np.int64)))
                self.scopes.append(scope)
            self.source_sizes.append(len(self.items) - before)
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


def to_target(masks: np.ndarray, labels: np.ndarray, annotated: tuple[str, ...] | None = None) -> dict:
    """torchvision detection target; ``annotated``: the categories the image's source annotates
    (key ``annotated``, :mod:`overlapseg.models.scope`; None: no key, fully annotated)."""
    keep = masks.any(axis=(1, 2))  # (an image may hold no instance: a generated one, say)
    masks, labels = masks[keep], labels[keep]
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
              "masks": torch.from_numpy(masks.astype(np.uint8))}
    if annotated is not None:
        target[SCOPE_KEY] = scope_tensor(annotated)
    return target


def image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).unsqueeze(0).expand(3, -1, -1).contiguous()


# ----------------------------------------------------------------------------- trainer
@register("maskrcnn")
class MaskRCNNTrainer(Trainer):
    """Mask R-CNN (ResNet-FPN; GroupNorm from scratch, FrozenBN with pretrained weights);
    subclasses change ``build_model`` only.

    Any torchvision-style detector fits: ``model(images, targets)`` returns named losses in
    training mode, and ``model(images)`` a list of ``boxes/labels/scores/masks`` dicts in eval
    mode (DoNet, IRNet and the CC framework subclass this trainer).
    """

    DEFAULTS = MASKRCNN_DEFAULTS
    SMOKE_PARAMS = {"image_size": 48, "fpn_channels": 16, "mask_head_channels": 16,
                    "box_head_dim": 32, "box_batch_size_per_image": 32,
                    "rpn_post_nms_top_n_train": 100, "warmup": 1, "batch_size": 2}
    INFERENCE_KEYS = ("score_threshold", "semantic_score", "mask_threshold", "max_side", "tile_overlap",
                      "detections_per_image")
    IMAGENET_BACKBONE = True
    SEMANTIC_FROM_INSTANCES = True
    INIT_PARTS = {"all": ("",), "backbone": ("backbone.",)}  # backbone: ResNet + FPN / laterals

    def build_model(self) -> torch.nn.Module:
        return build_maskrcnn_from_params(self.params, self.frozen_bn)

    def backbone_body(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.backbone.body

    def load_data(self, refs: list[DataRef]) -> InstanceData:
        return InstanceData(refs)

    def sample_batch(self, data: InstanceData, rng: np.random.Generator):
        batch = self.draw(data, rng, k=self.params["batch_size"])
        images, targets = [], []
        for idx in batch:
            image, masks, labels = data.items[idx]
            image, masks = augment(image, masks, rng, self.params["augment"])
            images.append(image_tensor(image))
            targets.append(to_target(masks, labels, data.scopes[idx]))
        return images, targets

    def losses(self, model, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        return model(images, targets)

    def detect(self, model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Binary masks (N, H, W), scores and labels of one image at its own pixel scale.

        An image with a side below ``image_size`` is padded to it with its median grey (a
        40 px crop alone gives the from-scratch detector nothing it was trained on: AP 0);
        per-image limits (``AREA_CAPS``, the RPN's proposal counts) grow with the area
        beyond ``image_size``^2, so a large image or tile is not capped at the training cap.
        """
        h, w = image.shape
        side = int(self.params["image_size"])
        if h < side or w < side:
            image = np.pad(image, ((0, max(0, side - h)), (0, max(0, side - w))),
                           constant_values=float(np.median(image)))
        with scaled_caps(model, image.size / side ** 2):
            out = model([image_tensor(image).to(self.device)])[0]
        masks = (out["masks"][:, 0, :h, :w] >= self.params["mask_threshold"]).cpu().numpy()
        keep = masks.any(axis=(1, 2))  # a detection lying in the padding only
        return masks[keep], out["scores"].float().cpu().numpy()[keep], out["labels"].cpu().numpy()[keep]

    def predict_image(self, model, image: np.ndarray, image_id: int):
        masks, scores, labels = detect_tiled(lambda tile: self.detect(model, tile), image,
                                             int(self.params["max_side"]),
                                             int(self.params["tile_overlap"]))
        return instance_outputs(masks, scores, labels, image_id, self.params)


@contextmanager
def scaled_caps(model: torch.nn.Module, factor: float):
    """Within the block, every per-image limit of ``model`` (``AREA_CAPS``, RPN proposals at
    test time) multiplied by ``factor`` when it exceeds 1 (rounded up); restored afterwards."""
    saved = []
    if factor > 1:
        for module in model.modules():
            for name in AREA_CAPS:
                value = getattr(module, name, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    saved.append((module, name, value))
                    setattr(module, name, math.ceil(value * factor))
            if isinstance(module, RegionProposalNetwork):
                for name in ("_pre_nms_top_n", "_post_nms_top_n"):
                    value = getattr(module, name)
                    saved.append((module, name, value))
                    setattr(module, name, {**value, "testing": math.ceil(value["testing"] * factor)})
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def detect_tiled(detect, image: np.ndarray, max_side: int, overlap: int):
    """``detect`` on the whole image, or on overlapping tiles when a side exceeds ``max_side``.

    A detection is kept only from the tile that owns its box centre (tiles own their area up
    to the middle of each overlap), so a cell on a seam is reported once, from the tile that
    sees it with the most context.
    """
    from overlapseg.models.scale import owner_of, tile_windows

    h, w = image.shape
    if h <= max_side and w <= max_side:
        return detect(image)
    all_masks, all_scores, all_labels = [], [], []
    for y0, y1, oy0, oy1 in tile_windows(h, max_side, overlap):
        for x0, x1, ox0, ox1 in tile_windows(w, max_side, overlap):
            masks, scores, labels = detect(np.ascontiguousarray(image[y0:y1, x0:x1]))
            for m, s, lab in zip(masks, scores, labels):
                ys, xs = np.nonzero(m)
                if not len(ys):
                    continue
                cy, cx = y0 + (ys.min() + ys.max() + 1) / 2, x0 + (xs.min() + xs.max() + 1) / 2
                if owner_of(cy, oy0, oy1) and owner_of(cx, ox0, ox1):
                    full = np.zeros((h, w), bool)
                    full[y0:y1, x0:x1] = m
                    all_masks.append(full)
                    all_scores.append(s)
                    all_labels.append(lab)
    order = np.argsort(-np.asarray(all_scores, np.float64), kind="stable")
    masks = np.stack(all_masks)[order] if all_masks else np.zeros((0, h, w), bool)
    return masks, np.asarray(all_scores, np.float32)[order], np.asarray(all_labels, np.int64)[order]


def instance_outputs(masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, image_id: int,
                     p: dict) -> tuple[list[dict], dict[str, np.ndarray]]:
    """COCO results (score >= ``score_threshold``) and semantic maps of the confident instances
    (score >= ``semantic_score``) from binary masks (N, H, W), scores and category ids."""
    results = []
    for m, s, lab in zip(masks, scores, labels):
        if s < p["score_threshold"] or not m.any():
            continue
        results.append({"image_id": image_id, "category_id": int(lab),
                         "segmentation": encode_mask(m), "score": round(float(s), 6)})
    confident = scores >= p["semantic_score"]
    cyto, nuc = CATEGORY_IDS["cytoplasm"], CATEGORY_IDS["nucleus"]
    semantic = semantic_targets(masks[confident & (labels == cyto)], masks[confident & (labels == nuc)])
    return results, semantic

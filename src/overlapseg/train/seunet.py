"""Training and inference of the SEU-Net family (trainer contract in ``train.api``).

Brightfield thesis (``003``) Sec. 4.2-4.3 and 5.1, scaled by params:

* from scratch, AdamW (thesis lr = wd = 1e-5; a short from-scratch demo needs ~1e-3);
* random crops of ``crop`` pixels from uniformly drawn training images, random flips,
  coarse dropout (rectangles of the input set to 0) and mild elastic deformation;
* loss = sum over heads of ``loss_weights[head] * BCE`` (Eq. 4.2); the overlap head instead
  uses the binary focal loss recalibrated (or reweighted) by the overlap-probability map of
  the chosen variant (Eq. 4.5 / 5.1, ``overlapseg.maps.losses``), plain focal when
  ``map_variant`` is null;
* annotation scope (issue 28): on images of a source that does not annotate a category, the
  heads derived from it have target :data:`IGNORE` and no loss (cytoplasm, border, overlap and
  background on a nuclei-only set); each head's loss is its mean over the known pixels, so the
  nucleus head still learns its background on every pixel of a nuclei-only image;
* inference by sliding windows (``tile``/``stride``, averaged), thresholds 0.5 for the
  semantic heads and 0.3 for the overlap head; instances by marker-controlled watershed
  (``overlapseg.models.watershed``).

Images enter as one grey channel in [0, 1] (``overlapseg.data.preprocess.to_float_gray``:
8-bit / 255, RGB averaged to grey, 16-bit percentile-stretched).
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from overlapseg.data.canonical import CATEGORY_IDS, CanonicalDataset, DataError
from overlapseg.data.preprocess import to_float_gray
from overlapseg.data.semantic import semantic_targets
from overlapseg.data.training_sources import known_classes
from overlapseg.models.seunet import SEUNET_MODEL_DEFAULTS, SEUNet, build_seunet, head_names
from overlapseg.models.sliding_window import sliding_window
from overlapseg.models.watershed import labels_to_coco, nucleus_instances, watershed_cells
from overlapseg.train.base import DataRef, Trainer, draw_items, register

log = logging.getLogger(__name__)

#: target value of a pixel whose class is unknown (a head whose category the source does not
#: annotate): no loss there. Nearest-neighbour resampling in ``augment`` keeps it exact.
IGNORE = -1.0

SEUNET_DEFAULTS: dict = {
    **Trainer.DEFAULTS,
    **SEUNET_MODEL_DEFAULTS,
    # scratch (the thesis trains SEU-Nets from scratch: no ImageNet encoder) or a warm start
    # {from: EXPERIMENT, part: all|encoder} from another experiment's model.pt
    "init": "scratch",
    # training
    "crop": 512,
    "batch_size": 4,
    "iterations": 2000,
    "lr": 1e-5,
    "weight_decay": 1e-5,
    "loss_weights": {"cytoplasm": 1.0, "nucleus": 1.0, "border": 1.0, "background": 1.0,
                     "overlap": 1.0},
    "augment": {"flip": True, "dropout_holes": 4, "dropout_size": 0.1,
                "elastic_p": 0.5, "elastic_alpha": 6.0, "elastic_sigma": 8.0},
    "border_width": 2,
    "checkpoint_every": 500,
    "threads": None,
    # inference
    "tile": 512,
    "stride": 256,
    "thresholds": {"cytoplasm": 0.5, "nucleus": 0.5, "border": 0.5, "background": 0.5,
                   "overlap": 0.3},
    "watershed": {"min_size": 50, "min_nucleus_size": 10, "min_distance": 10, "distance_weight": 0.5},
}


def resolve_params(params: dict | None) -> dict:
    """Defaults overridden by ``params`` (nested dicts merged); unknown keys are errors."""
    return SEUNetTrainer.resolve_params(params)


# ----------------------------------------------------------------------------- data
def _load_map(ref: DataRef, name: str, shape: tuple[int, int]) -> np.ndarray:
    from overlapseg.maps.overlap_maps import read_map

    path = Path(ref.maps) / f"{name}.npz"
    prob = read_map(path)[0].astype(np.float32)
    if prob.shape != shape:
        raise DataError(path, f"map shape {prob.shape} does not match image shape {shape}")
    return prob


class SemanticData:
    """Grey images, per-head targets and (optionally) overlap maps, loaded into memory.

    ``items[i]`` is a float32 array (1 + K [+ 1], H, W): image, one target per head in the
    model's head order (:data:`IGNORE` everywhere for a head the source does not annotate),
    then the overlap-probability map when the overlap loss uses one.
    """

    def __init__(self, refs: list[DataRef], heads: tuple[str, ...], map_variant: str | None,
                 border_width: int = 2):
        self.heads = heads
        self.with_map = map_variant is not None
        self.items: list[np.ndarray] = []
        self.names: list[str] = []
        self.source_sizes: list[int] = []  # items per source, in order (inputs.mix)
        for ref in refs:
            before = len(self.items)
            ds = CanonicalDataset(ref.root)
            known = known_classes(heads, ref.scope(ds))
            if not any(known):
                log.warning("%s (source %s) annotates only %s: no head of %s learns from its images",
                            ref.root, ref.source, "+".join(ref.scope(ds)), "/".join(heads))
            for name in ref.names if ref.names is not None else ds.names:
                if name not in ds.images:
                    raise DataError(ds.annotation_file, f"image {name!r} (from the split) not in dataset")
                image = to_float_gray(ds.load_image(name))
                cells, nuclei = ds.masks(name, "cytoplasm"), ds.masks(name, "nucleus")
                targets = semantic_targets(cells, nuclei, border_width)
                planes = [image] + [targets[h].astype(np.float32) if ok
                                    else np.full(image.shape, IGNORE, np.float32)
                                    for h, ok in zip(heads, known)]
                if self.with_map:
                    if ref.maps is not None:
                        prob = _load_map(ref, name, image.shape)
                    else:  # same computation as the maps rule
                        from overlapseg.maps.overlap_maps import image_maps
                        prob = image_maps(ds, name, map_variant)["prob"].astype(np.float32)
                    planes.append(prob)
                self.items.append(np.stack(planes).astype(np.float32))
                self.names.append(name)
            self.source_sizes.append(len(self.items) - before)
        if not self.items:
            raise ValueError(f"no training images in {[str(r.root) for r in refs]}")

    def __len__(self) -> int:
        return len(self.items)


def _random_crop(stack: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    return random_crop_at(stack, crop, rng)[0]


def random_crop_at(stack: np.ndarray, crop: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """A random ``crop`` x ``crop`` window (reflect-padded when the image is smaller) and the
    (y, x) of its top-left pixel in the image (negative inside the padding)."""
    _, h, w = stack.shape
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        stack = np.pad(stack, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)),
                       mode="reflect")
        h, w = stack.shape[1:]
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    return stack[:, y:y + crop, x:x + crop], (y - ph // 2, x - pw // 2)


def augment(stack: np.ndarray, n_targets: int, rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """Flips, mild elastic deformation (all planes), coarse dropout (image only).

    ``stack`` is (1 + n_targets [+ map], h, w); plane 0 is the image. Targets are resampled
    with nearest neighbour so they stay binary; image and map bilinearly.
    """
    stack = np.array(stack, dtype=np.float32, copy=True)
    if cfg.get("flip"):
        if rng.random() < 0.5:
            stack = stack[:, :, ::-1]
        if rng.random() < 0.5:
            stack = stack[:, ::-1, :]
    _, h, w = stack.shape
    if rng.random() < cfg.get("elastic_p", 0.0):
        alpha, sigma = float(cfg["elastic_alpha"]), float(cfg["elastic_sigma"])
        dy = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="constant")
        dx = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="constant")
        # normalise so alpha is the largest displacement in pixels
        scale = alpha / max(np.abs(dy).max(), np.abs(dx).max(), 1e-12)
        yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        coords = np.stack([yy + dy * scale, xx + dx * scale])
        out = np.empty_like(stack)
        for c in range(stack.shape[0]):
            order = 0 if 1 <= c <= n_targets else 1
            out[c] = ndi.map_coordinates(stack[c], coords, order=order, mode="reflect")
        stack = out
    holes = int(cfg.get("dropout_holes", 0))
    if holes:
        size = max(1, int(round(cfg["dropout_size"] * min(h, w))))
        ys = rng.integers(0, h - size + 1, holes)
        xs = rng.integers(0, w - size + 1, holes)
        for y, x in zip(ys, xs):
            stack[0, y:y + size, x:x + size] = 0.0
    return np.ascontiguousarray(stack)


def sample_batch(data: SemanticData, rng: np.random.Generator, params: dict,
                 mix: list[float] | None = None) -> np.ndarray:
    """(B, planes, crop, crop) training batch drawn with ``rng`` (sources weighted by ``mix``)."""
    crops = []
    for _ in range(int(params["batch_size"])):
        item = data.items[draw_items(rng, len(data), data.source_sizes, mix)]
        crops.append(augment(_random_crop(item, int(params["crop"]), rng), len(data.heads), rng,
                             params["augment"]))
    return np.stack(crops)


def semantic_loss(logits: torch.Tensor, targets: torch.Tensor, prob_map: torch.Tensor | None,
                  heads: tuple[str, ...], params: dict) -> tuple[torch.Tensor, dict]:
    """Weighted sum of per-head BCE, focal (map-guided) loss for the overlap head; pixels whose
    target is :data:`IGNORE` take no part (each head's mean runs over its known pixels)."""
    from overlapseg.maps.losses import masked_mean, recalibrated_focal_loss

    parts = {}
    total = logits.new_zeros(())
    for k, head in enumerate(heads):
        target, valid = targets[:, k], None
        if not bool((target >= 0).all()):  # some image's source does not annotate this head
            valid = target >= 0
            target = target.clamp_min(0)
        if head == "overlap":
            part = recalibrated_focal_loss(logits[:, k], target, prob_map,
                                           mode=params["focal_mode"],
                                           alpha=float(params["focal_alpha"]),
                                           gamma=float(params["focal_gamma"]), valid=valid)
        elif valid is None:
            part = F.binary_cross_entropy_with_logits(logits[:, k], target)
        else:
            part = masked_mean(F.binary_cross_entropy_with_logits(logits[:, k], target,
                                                                  reduction="none"), valid)
        parts[head] = part
        total = total + float(params["loss_weights"][head]) * part
    return total, parts


def init_output_priors(model: SEUNet, data: SemanticData) -> dict[str, float]:
    """Set each head's output bias to the logit of its foreground frequency in ``data``.

    The prior initialisation of the focal-loss paper (Lin et al., Sec. 3.3), per head: small
    classes (nuclei, borders, overlaps: ~1% of pixels) otherwise spend the first hundreds of
    iterations only pushing their bias down, which a short from-scratch run cannot afford.
    """
    priors = {}
    for k, head in enumerate(data.heads):
        known = [item[1 + k] for item in data.items if item[1 + k].min() >= 0]  # not IGNORE
        fg = sum(float(t.sum()) for t in known)
        n = sum(t.size for t in known)
        pi = min(max(fg / n if n else 0.5, 1e-3), 1 - 1e-3)
        with torch.no_grad():
            model.decoders[head].out.bias.fill_(float(np.log(pi / (1 - pi))))
        priors[head] = pi
    return priors


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def predict_probabilities(model: SEUNet, gray: np.ndarray, params: dict,
                          device: str = "cpu", amp_dtype: torch.dtype | None = None
                          ) -> dict[str, np.ndarray]:
    """Per-head probability maps (H, W) of one grey float image (``to_float_gray`` output);
    ``amp_dtype``: the trainer's mixed-precision policy (``Trainer.amp_dtype``), None = fp32."""
    x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None].to(device)

    def fn(batch):
        with (torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None and device.startswith("cuda")
              else nullcontext()):
            return torch.sigmoid(model(batch).float())

    probs = sliding_window(fn, x, int(params["tile"]), int(params["stride"]),
                           batch_size=int(params["batch_size"]))
    return {h: probs[k].cpu().numpy() for k, h in enumerate(model.heads)}


def binarise(probs: dict[str, np.ndarray], thresholds: dict) -> dict[str, np.ndarray]:
    """Binary uint8 semantic maps (threshold per head)."""
    return {h: (p >= float(thresholds[h])).astype(np.uint8) for h, p in probs.items()}


def instances_from_probabilities(probs: dict[str, np.ndarray], image_id: int,
                                 params: dict) -> list[dict]:
    """COCO results: watershed cells (category 1) and nucleus components (category 2)."""
    thr, ws = params["thresholds"], params["watershed"]
    nucleus = probs.get("nucleus")
    cells = watershed_cells(probs["cytoplasm"], nucleus, probs.get("border"),
                            threshold=float(thr["cytoplasm"]),
                            nucleus_threshold=float(thr["nucleus"]),
                            min_size=int(ws["min_size"]),
                            min_nucleus_size=int(ws["min_nucleus_size"]),
                            min_distance=int(ws["min_distance"]),
                            distance_weight=float(ws["distance_weight"]))
    results = labels_to_coco(cells, probs["cytoplasm"], image_id, CATEGORY_IDS["cytoplasm"])
    if nucleus is not None:
        nuclei = nucleus_instances(nucleus, float(thr["nucleus"]), int(ws["min_nucleus_size"]))
        results += labels_to_coco(nuclei, nucleus, image_id, CATEGORY_IDS["nucleus"])
    return results


def validation_f1(model: SEUNet, val: SemanticData, params: dict, device: str,
                  amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Pixel F1 per head over the validation images (sliding window, thresholds)."""
    model.eval()
    tp = {h: 0 for h in model.heads}
    fp, fn = dict(tp), dict(tp)
    with torch.no_grad():
        for item in val.items:
            pred = binarise(predict_probabilities(model, item[0], params, device, amp_dtype),
                            params["thresholds"])
            for k, h in enumerate(model.heads):
                gt = item[1 + k] > 0.5
                pr = pred[h].astype(bool)
                tp[h] += int((gt & pr).sum())
                fp[h] += int((~gt & pr).sum())
                fn[h] += int((gt & ~pr).sum())
    return {f"f1_{h}": 2 * tp[h] / max(1, 2 * tp[h] + fp[h] + fn[h]) for h in model.heads}


# ----------------------------------------------------------------------------- trainer
@register("seunet")
class SEUNetTrainer(Trainer):
    """SEU-Net with decoupled heads, per-head BCE and the map-guided focal overlap loss."""

    DEFAULTS = SEUNET_DEFAULTS
    SMOKE_PARAMS = {"heads": "4-head", "overlap": True, "base_channels": 4, "depth": 2, "crop": 32,
                    "batch_size": 2, "lr": 1e-3, "tile": 48, "stride": 24,
                    "watershed": {"min_size": 5, "min_nucleus_size": 2, "min_distance": 4}}
    INFERENCE_KEYS = ("tile", "stride", "thresholds", "watershed")
    USES_MAPS = True
    INIT_PARTS = {"all": ("",), "encoder": ("encoder.",)}  # SparseSEU-Net shares the encoder

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        head_names(p["heads"])  # validates
        if p["focal_mode"] not in ("recalibrate", "reweight"):
            raise ValueError(f"seunet param focal_mode={p['focal_mode']!r}: recalibrate or reweight")
        if p["stride"] > p["tile"]:
            raise ValueError(f"seunet params: stride {p['stride']} larger than tile {p['tile']}")

    def check_inputs(self, inputs) -> None:
        super().check_inputs(inputs)
        if inputs is not None and inputs.map_variant is not None and not self.params["overlap"]:
            raise ValueError("inputs.maps (an overlap-probability map) needs the overlap head "
                             "(params: overlap: true)")

    @property
    def heads(self) -> tuple[str, ...]:
        return head_names(self.params["heads"], self.params["overlap"])

    def build_model(self) -> SEUNet:
        return build_seunet(self.params)

    def load_data(self, refs: list[DataRef]) -> SemanticData:
        is_val = self.inputs is not None and refs == [self.inputs.val]
        variant = None if is_val or self.inputs is None else self.inputs.map_variant
        return SemanticData(refs, self.heads, variant, self.params["border_width"])

    def wants_validation(self) -> bool:
        return True

    def on_data_loaded(self, model: SEUNet, data: SemanticData) -> None:
        if self.params["prior_init"]:
            init_output_priors(model, data)

    def sample_batch(self, data: SemanticData, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(sample_batch(data, rng, self.params, self.mix))

    def losses(self, model: SEUNet, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        n_planes = 1 + len(self.heads)
        x, y = batch[:, :1], batch[:, 1:n_planes]
        prob_map = batch[:, n_planes] if batch.shape[1] > n_planes else None
        logits = model(x)
        total, parts = semantic_loss(logits.float(), y, prob_map, self.heads, self.params)
        weights = self.params["loss_weights"]
        return {f"loss_{h}": float(weights[h]) * v for h, v in parts.items()}

    def validate(self, model: SEUNet, val: SemanticData) -> dict[str, float]:
        return validation_f1(model, val, self.params, self.device, self.amp_dtype())

    def predict_image(self, model: SEUNet, image: np.ndarray, image_id: int):
        probs = predict_probabilities(model, image, self.params, self.device, self.amp_dtype())
        return instances_from_probabilities(probs, image_id, self.params), \
            binarise(probs, self.params["thresholds"])

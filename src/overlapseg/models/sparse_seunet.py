"""SparseSEU-Net: box-free instance segmentation with instance activation maps on an SEU-Net.

Brightfield thesis (``003``) Sec. 4.5 and 5.7, after SparseInst (Cheng et al. 2022, the
thesis' [11]):

* the SEU-Net encoder/decoder (``overlapseg.models.seunet``) gives decoder features ``X``; at
  the last decoder layer they fork into a *mask branch* (stack of 3x3 convs -> mask features
  ``M``) and an *instance branch* (3x3 convs -> ``I``, then a 3x3 conv + sigmoid -> ``N``
  instance activation maps ``A``), Sec. 4.5.2;
* each map, normalised to sum to 1, averages the instance features into one vector per
  candidate (Eq. 4.9); linear layers turn it into class logits and a mask kernel ``k``, and
  the candidate's mask logits are ``k . M`` at every pixel;
* training matches candidates one-to-one to ground-truth instances (Hungarian, score
  ``p_cls^(1-l) * dice^l``, l = 0.8, Eq. 4.10-4.13), supervises matched masks with Dice + BCE
  (Eq. 4.14-4.16) and the classes of all ``N`` candidates with the focal loss (Eq. 4.17);
* inference ranks candidates by ``class probability x maskness`` (mean probability inside
  the binarised mask, Sec. 4.5.3); no NMS, the one-to-one matching suppresses duplicates.

Variants (Sec. 5.7, each a switch): ``overlap_head`` (a parallel SEU-Net decoder predicting
overlap regions whose features are concatenated to ``X`` before the fork, Fig. 5.9),
``attention_map`` (that head trained with the overlap-probability-map focal loss of Sec. 4.3),
``multi_level`` (the fork at every decoder level, branch features upsampled x2 and
concatenated with the level's decoder features and skip, Sec. 4.5.4 / Fig. 4.13) and
``iou_objectness`` (a head regressing the IoU of each matched mask with MSE, Eq. 5.2, whose
prediction joins the score as in SparseInst).

Choices where the thesis is silent (SparseInst's where it has one): the activation maps pool
the *instance-branch* features ``I`` (the thesis' 256-d instance vectors are SparseInst's
instance-branch width, the SEU-Net top layer is far narrower), pixel coordinates are
appended to the branch inputs (``coord_features``; activation maps need them to tell two
identical cells apart). SparseInst normalises them per input, which is right for whole
images but not for crop training and tiled inference: a map tuned to a part of a 192 px crop
would cover the same fraction of a 512 px tile, 2.7x wider. Here they are in a fixed unit,
``coord_unit`` pixels (default: the training ``crop``), measured from the image origin (each
window passes its offset), so a crop and the same pixels seen in a tile get identical
coordinates (:func:`coordinates`); ``coord_unit`` 0 keeps SparseInst's per-input [-1, 1].
Further, branch convs are conv + ReLU without norm, class logits and activation
maps start at the focal-loss prior 0.01, loss weights are SparseInst's (cls 2, Dice 2, BCE 5).
Ground-truth labels are the project's category ids (1 cytoplasm, 2 nucleus), class channel
``label - 1``. ``input_scale`` resamples images before the network, in training and at test
(SparseInst resizes its inputs too): activation maps learn to separate instances when each
training window holds whole cells, and the branches run at full resolution, so large cells
(ISBI cytoplasm: ~14,000 px at 512 px) are cheaper and learnable on whole, shrunk images.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from overlapseg.data.canonical import CATEGORY_IDS
from overlapseg.maps.losses import MODES as FOCAL_MODES
from overlapseg.maps.losses import recalibrated_focal_loss
from overlapseg.models.scale import resample, resize_mask
from overlapseg.models.scope import class_scope
from overlapseg.models.seunet import SEUNET_MODEL_DEFAULTS, Decoder, SEConvBlock
from overlapseg.models.sliding_window import tile_starts

_SPARSE_KEYS: dict = {
    # model (Sec. 4.5.2)
    "num_classes": 2,             # class scores per candidate (category ids 1..num_classes)
    "n_instances": 100,           # N activation maps / candidates (thesis: 100)
    "inst_dim": 256,              # instance branch width = instance vector size (thesis: 256)
    "mask_dim": 128,              # mask branch width = mask kernel size
    "branch_convs": 4,            # 3x3 convs per branch (thesis: 4)
    "coord_features": True,       # append (x, y) coordinates to the branch inputs (SparseInst)
    "coord_unit": None,           # px per coordinate half-range; null: the trainer's crop;
                                  # 0: per input in [-1, 1] (SparseInst on whole images)
    "input_scale": 1.0,           # images are resampled by this factor before the network, in
                                  # training and at test (masks back to the image's size);
                                  # crop, tile, stride and coord_unit are in resampled pixels
    "prior_prob": 0.01,           # initial class / activation probability (focal-loss prior)
    # variants (Sec. 5.7)
    "overlap_head": False,        # parallel overlap decoder, features joined before the fork
    "attention_map": False,       # overlap head trained with the probability-map focal loss
    "multi_level": False,         # fork at every decoder level (Sec. 4.5.4)
    "iou_objectness": False,      # IoU head, MSE to the matched IoU (Sec. 5.7.3)
    # matching and losses (Sec. 4.5.3)
    "match_lambda": 0.8,          # score = p_cls^(1 - l) * dice^l
    "lambda_cls": 2.0,
    "lambda_dice": 2.0,
    "lambda_bce": 5.0,
    "lambda_iou": 1.0,
    "lambda_overlap": 1.0,
    "cls_alpha": 0.25,            # focal loss of the class scores
    "cls_gamma": 2.0,
    # optimiser (Sec. 5.1: AdamW 5e-5 / 0.005, batch 2 with 4-step gradient accumulation)
    "lr": 5e-5,
    "weight_decay": 0.005,
    "batch_size": 2,
    "accumulate": 4,              # optimiser step every `accumulate` batches (trainer's job)
    # inference
    "mask_threshold": 0.5,        # binarise mask probabilities (Sec. 5.1)
    "score_threshold": 0.05,      # drop candidates below this score (low: AP needs a ranking)
}

#: SEU-Net network params, SparseSEU-Net keys on top (the trainer adds the SEU-Net recipe:
#: crops, augmentation, schedule).
SPARSE_DEFAULTS: dict = {**copy.deepcopy(SEUNET_MODEL_DEFAULTS), **_SPARSE_KEYS}


def sparse_params(params: dict | None = None) -> dict:
    """``SPARSE_DEFAULTS`` overridden by ``params`` (nested dicts merged), then validated."""
    params = dict(params or {})
    unknown = set(params) - set(SPARSE_DEFAULTS)
    if unknown:
        raise KeyError(f"unknown sparse-seunet params: {sorted(unknown)}")
    out = copy.deepcopy(SPARSE_DEFAULTS)
    for key, value in params.items():
        if isinstance(out[key], dict) and isinstance(value, dict):
            out[key].update(value)
        else:
            out[key] = value
    check_sparse_params(out)
    return out


def check_sparse_params(p: dict) -> None:
    """ValueError for values the model, loss or inference cannot work with."""
    for key in ("num_classes", "n_instances", "inst_dim", "mask_dim", "branch_convs", "depth",
                "base_channels", "accumulate"):
        if int(p[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {p[key]}")
    for key in ("match_lambda", "mask_threshold", "score_threshold"):
        if not 0.0 <= float(p[key]) <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {p[key]}")
    if not 0.0 < float(p["prior_prob"]) < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {p['prior_prob']}")
    scale = p.get("input_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < float(scale) <= 4:
        raise ValueError(f"input_scale must be a number in (0, 4], got {scale!r}")
    if p.get("coord_unit") is not None and float(p["coord_unit"]) < 0:
        raise ValueError(f"coord_unit must be >= 0 px (0: per-input coordinates), got {p['coord_unit']}")
    if p["attention_map"] and not p["overlap_head"]:
        raise ValueError("attention_map needs the overlap head (set overlap_head: true)")
    if p["focal_mode"] not in FOCAL_MODES:
        raise ValueError(f"unknown focal_mode {p['focal_mode']!r} ({' | '.join(FOCAL_MODES)})")


# ----------------------------------------------------------------------------- network
def _conv_stack(c_in: int, c_out: int, n: int) -> nn.Sequential:
    """``n`` x (3x3 conv + ReLU), He-initialised (SparseInst's branch convs)."""
    layers: list[nn.Module] = []
    for _ in range(n):
        conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers)


def coordinates(x: torch.Tensor, unit: float | None = None, origin: torch.Tensor | None = None,
                stride: int = 1) -> torch.Tensor:
    """(B, 2, H, W) (x, y) coordinates of the cells of a (B, C, H, W) feature map.

    ``unit`` None: per input, in [-1, 1] (SparseInst). Otherwise in a fixed pixel unit: cell
    j of a map of ``stride`` px covers image pixel u = origin + (j + 0.5) stride - 0.5, at
    coordinate 2 (u + 0.5) / unit - 1, where ``origin`` (B, 2) holds each window's (y, x)
    offset in its image (zeros if None). A ``unit``-pixel crop at the image origin spans
    about [-1, 1] as before, and the same pixels in any other window get the same values.
    """
    b, _, h, w = x.shape
    if unit is None:
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx, yy])[None].expand(b, -1, -1, -1)
    if origin is None:
        origin = torch.zeros(b, 2)
    origin = torch.as_tensor(origin, dtype=torch.float64).reshape(b, 2)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * stride
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * stride
    cy = 2 * (origin[:, 0, None] + ys) / unit - 1  # (B, H)
    cx = 2 * (origin[:, 1, None] + xs) / unit - 1  # (B, W)
    out = torch.stack([cx[:, None, :].expand(b, h, w), cy[:, :, None].expand(b, h, w)], 1)
    return out.to(device=x.device, dtype=x.dtype)


def normalise_activation_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) activation maps -> (B, N, H*W), each map rescaled to sum to 1 (Eq. 4.9)."""
    flat = maps.flatten(2)
    return flat / flat.sum(-1, keepdim=True).clamp_min(1e-6)


class LevelDecoder(Decoder):
    """An SEU-Net decoder branch that returns the features of every level, coarse to fine.

    ``logits=False`` drops the 1x1 output layer: the instance decoder only feeds the branches.
    """

    def __init__(self, channels: list[int], norm: str, reduction: int, logits: bool = True):
        super().__init__(channels, norm, reduction)
        if not logits:
            self.out = None

    def levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x, out = feats[-1], []
        for up, block, skip in zip(self.up, self.blocks, feats[-2::-1]):
            x = block(torch.cat([up(x), skip], dim=1))
            out.append(x)
        return out


class InstanceHead(nn.Module):
    """Activation maps -> instance vectors -> class logits, mask kernels (+ IoU logit)."""

    def __init__(self, inst_dim: int, mask_dim: int, n_instances: int, num_classes: int,
                 iou_objectness: bool, prior_prob: float):
        super().__init__()
        self.iam = nn.Conv2d(inst_dim, n_instances, 3, padding=1)
        self.cls = nn.Linear(inst_dim, num_classes)
        self.kernel = nn.Linear(inst_dim, mask_dim)
        self.objectness = nn.Linear(inst_dim, 1) if iou_objectness else None
        prior = -math.log((1 - prior_prob) / prior_prob)
        for layer in (self.iam, self.cls, self.kernel):
            nn.init.normal_(layer.weight, std=0.01)
        nn.init.constant_(self.iam.bias, prior)
        nn.init.constant_(self.cls.bias, prior)
        nn.init.zeros_(self.kernel.bias)

    def forward(self, inst: torch.Tensor, mask_features: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = inst.shape
        maps = torch.sigmoid(self.iam(inst))
        vectors = torch.bmm(normalise_activation_maps(maps), inst.flatten(2).transpose(1, 2))
        kernels = self.kernel(vectors)
        masks = torch.bmm(kernels, mask_features.flatten(2)).view(b, -1, h, w)
        out = {"logits": self.cls(vectors), "kernels": kernels, "masks": masks,
               "activation_maps": maps, "mask_features": mask_features}
        if self.objectness is not None:
            out["objectness"] = self.objectness(vectors)[..., 0]
        return out


class SparseSEUNet(nn.Module):
    """SEU-Net encoder/decoder with instance and mask branches (thesis Sec. 4.5, 5.7).

    ``forward(x)`` takes (B, 1, H, W) with H, W multiples of :attr:`stride` and returns
    ``logits`` (B, N, K) class logits, ``masks`` (B, N, H, W) mask logits, ``kernels``
    (B, N, mask_dim), ``mask_features`` (B, mask_dim, H, W), ``activation_maps`` (B, N, H, W)
    in (0, 1), and with the switches ``overlap`` (B, 1, H, W) logits and ``objectness``
    (B, N) IoU logits.
    """

    def __init__(self, num_classes: int = 2, n_instances: int = 100, inst_dim: int = 256,
                 mask_dim: int = 128, branch_convs: int = 4, base_channels: int = 32,
                 depth: int = 4, norm: str = "batch", se_reduction: int = 8,
                 overlap_head: bool = False, multi_level: bool = False,
                 iou_objectness: bool = False, coord_features: bool = True,
                 prior_prob: float = 0.01, in_channels: int = 1, coord_unit: float | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.in_channels = in_channels
        self.depth = depth
        self.stride = 2 ** depth
        self.coord_features = coord_features
        if coord_unit is not None and coord_unit <= 0:
            raise ValueError(f"coord_unit must be > 0 px (or None), got {coord_unit}")
        self.coord_unit = None if coord_unit is None else float(coord_unit)
        self.multi_level = multi_level
        channels = [base_channels * 2 ** i for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        c_prev = in_channels
        for c in channels:
            self.encoder.append(SEConvBlock(c_prev, c, norm, se_reduction))
            c_prev = c
        self.decoder = LevelDecoder(channels, norm, se_reduction, logits=False)
        self.overlap_decoder = (LevelDecoder(channels, norm, se_reduction)
                                if overlap_head else None)
        extra = 2 if coord_features else 0
        # branch inputs per level: decoder features (+ overlap features) (+ coordinates); with
        # multi-level also the skip and the upsampled branch features of the level below
        if multi_level:
            widths = [channels[-1] + extra]  # bottleneck: encoder output only
            for c in channels[-2::-1]:
                widths.append(c * (3 if overlap_head else 2) + extra)
        else:
            widths = [channels[0] * (2 if overlap_head else 1) + extra]
        carry_inst = [0] + [inst_dim] * (len(widths) - 1)
        carry_mask = [0] + [mask_dim] * (len(widths) - 1)
        self.inst_branches = nn.ModuleList(
            _conv_stack(c + k, inst_dim, branch_convs) for c, k in zip(widths, carry_inst))
        self.mask_branches = nn.ModuleList(
            _conv_stack(c + k, mask_dim, branch_convs) for c, k in zip(widths, carry_mask))
        self.head = InstanceHead(inst_dim, mask_dim, n_instances, num_classes, iou_objectness,
                                 prior_prob)

    def _with_coords(self, parts: list[torch.Tensor], size: int, origin) -> torch.Tensor:
        if self.coord_features:
            stride = size // parts[0].shape[-1]
            parts = parts + [coordinates(parts[0], self.coord_unit, origin, stride)]
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, origin: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``origin``: (B, 2) (y, x) pixel offsets of the inputs in their images (default 0),
        read by the coordinate features when ``coord_unit`` is set."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the "
                             f"network stride {self.stride} (pad it, see predict_instances)")
        size = x.shape[-1]
        feats = []
        for k, block in enumerate(self.encoder):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        levels = self.decoder.levels(feats)
        out: dict[str, torch.Tensor] = {}
        overlap_levels = None
        if self.overlap_decoder is not None:
            overlap_levels = self.overlap_decoder.levels(feats)
            out["overlap"] = self.overlap_decoder.out(overlap_levels[-1])
        if self.multi_level:
            base = self._with_coords([feats[-1]], size, origin)
            inst, mask = self.inst_branches[0](base), self.mask_branches[0](base)
            for k, (level, skip) in enumerate(zip(levels, feats[-2::-1])):
                parts = [level, skip] + ([overlap_levels[k]] if overlap_levels else [])
                base = self._with_coords(parts, size, origin)
                inst = F.interpolate(inst, scale_factor=2, mode="bilinear", align_corners=False)
                mask = F.interpolate(mask, scale_factor=2, mode="bilinear", align_corners=False)
                inst = self.inst_branches[k + 1](torch.cat([base, inst], dim=1))
                mask = self.mask_branches[k + 1](torch.cat([base, mask], dim=1))
        else:
            top = [levels[-1]] + ([overlap_levels[-1]] if overlap_levels else [])
            base = self._with_coords(top, size, origin)
            inst, mask = self.inst_branches[0](base), self.mask_branches[0](base)
        out.update(self.head(inst, mask))
        return out


def coordinate_unit(p: dict) -> float | None:
    """Pixels per coordinate half-range: ``coord_unit``, else the training ``crop``; None
    (per-input coordinates) for ``coord_unit`` 0 or when neither is set."""
    unit = p.get("coord_unit")
    if unit is None:
        unit = p.get("crop")
    return float(unit) if unit else None


def build_sparse_seunet(p: dict) -> SparseSEUNet:
    """Model from resolved params (``sparse_params``; the trainer's add ``crop``)."""
    check_sparse_params(p)
    return SparseSEUNet(num_classes=int(p["num_classes"]), n_instances=int(p["n_instances"]),
                        inst_dim=int(p["inst_dim"]), mask_dim=int(p["mask_dim"]),
                        branch_convs=int(p["branch_convs"]),
                        base_channels=int(p["base_channels"]), depth=int(p["depth"]),
                        norm=p.get("norm", "batch"), se_reduction=int(p.get("se_reduction", 8)),
                        overlap_head=bool(p["overlap_head"]), multi_level=bool(p["multi_level"]),
                        iou_objectness=bool(p["iou_objectness"]),
                        coord_features=bool(p["coord_features"]),
                        prior_prob=float(p["prior_prob"]), coord_unit=coordinate_unit(p))


# ----------------------------------------------------------------------------- matching
def dice_score(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pairwise Dice (Eq. 4.13) of (N, P) probabilities and (M, P) binary masks -> (N, M)."""
    inter = pred @ gt.T
    return 2 * inter / ((pred * pred).sum(-1)[:, None] + (gt * gt).sum(-1)[None] + eps)


def matching_score(logits: torch.Tensor, mask_logits: torch.Tensor, gt_masks: torch.Tensor,
                   gt_labels: torch.Tensor, lam: float = 0.8) -> torch.Tensor:
    """(N, M) quality of assigning candidate i to instance j: ``p_cls^(1-lam) * dice^lam``.

    Eq. 4.11 with ``C_cls`` the candidate's probability of the instance's class and ``C_mask``
    its Dice with the instance; the Hungarian assignment maximises the sum (SparseInst).
    ``gt_labels`` are category ids 1..K.
    """
    prob = torch.sigmoid(logits)[:, gt_labels - 1]
    dice = dice_score(torch.sigmoid(mask_logits).flatten(1), gt_masks.flatten(1).to(logits.dtype))
    return prob.pow(1.0 - lam) * dice.clamp_min(0).pow(lam)


@torch.no_grad()
def match_instances(logits: torch.Tensor, mask_logits: torch.Tensor, gt_masks: torch.Tensor,
                    gt_labels: torch.Tensor, lam: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one assignment (candidate indices, instance indices) maximising the score.

    With more instances than candidates only ``N`` instances are matched.
    """
    if len(gt_labels) == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
        return empty, empty
    with torch.autocast(logits.device.type, enabled=False):  # full precision under AMP
        score = matching_score(logits.float(), mask_logits.float(), gt_masks, gt_labels, lam)
    rows, cols = linear_sum_assignment(score.cpu().double().numpy(), maximize=True)
    return (torch.as_tensor(rows, dtype=torch.int64, device=logits.device),
            torch.as_tensor(cols, dtype=torch.int64, device=logits.device))


# ----------------------------------------------------------------------------- losses
def dice_loss(mask_logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pair Dice loss (Eq. 4.14) of (n, H, W) logits and binary targets -> (n,)."""
    p, t = torch.sigmoid(mask_logits).flatten(1), target.flatten(1)
    return 1 - 2 * (p * t).sum(-1) / ((p * p).sum(-1) + (t * t).sum(-1) + eps)


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of paired (n, H, W) boolean masks -> (n,) (0 where both are empty)."""
    inter = (pred & gt).flatten(1).sum(-1)
    union = (pred | gt).flatten(1).sum(-1)
    return inter.float() / union.clamp_min(1).float()


def _check_targets(targets: list[dict], b: int, shape: tuple[int, int], k: int,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(masks float (n, H, W), labels int64 (n,)) per image; empty instances dropped."""
    if len(targets) != b:
        raise ValueError(f"{len(targets)} targets for a batch of {b} images")
    out = []
    for i, t in enumerate(targets):
        masks = torch.as_tensor(t["masks"], device=device)
        labels = torch.as_tensor(t["labels"], device=device).to(torch.int64)
        if masks.ndim != 3 or tuple(masks.shape[1:]) != shape:
            raise ValueError(f"target {i}: masks must be (n, {shape[0]}, {shape[1]}), "
                             f"got {tuple(masks.shape)}")
        if labels.shape != (masks.shape[0],):
            raise ValueError(f"target {i}: {tuple(labels.shape)} labels for {masks.shape[0]} masks")
        if len(labels) and (labels.min() < 1 or labels.max() > k):
            raise ValueError(f"target {i}: labels must be category ids in 1..{k}, "
                             f"got {labels.unique().tolist()}")
        masks = (masks > 0.5).float() if masks.dtype != torch.bool else masks.float()
        keep = masks.flatten(1).sum(-1) > 0  # instances cropped away leave empty masks
        out.append((masks[keep], labels[keep]))
    return out


def overlap_targets(targets: list[dict], shape: tuple[int, int], device) -> torch.Tensor:
    """(B, H, W) pixels covered by >= 2 cytoplasm instances (the overlap head's target)."""
    planes = []
    for t in targets:
        masks = torch.as_tensor(t["masks"], device=device) > 0.5
        cells = masks[torch.as_tensor(t["labels"], device=device) == CATEGORY_IDS["cytoplasm"]]
        planes.append(cells.sum(0) >= 2 if len(cells) else torch.zeros(shape, dtype=torch.bool,
                                                                         device=device))
    return torch.stack(planes).float()


def sparse_losses(outputs: dict[str, torch.Tensor], targets: list[dict], p: dict,
                  overlap_target: torch.Tensor | None = None,
                  prob_map: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Named scalar losses of one batch, each times its ``lambda_*``: the objective is their sum.

    ``targets[b]``: ``masks`` (n, H, W) bool/float, ``labels`` (n,) category ids 1..K,
    optionally ``annotated`` (:mod:`overlapseg.models.scope`): on an image whose source does not
    annotate a class, that class's scores take no part in ``loss_cls`` (its instances are
    absent, so matching only assigns annotated classes) and, without cytoplasm, the overlap
    head has no loss there. Keys:
    ``loss_cls`` (focal loss of all N candidates, Eq. 4.17), ``loss_dice``, ``loss_bce``
    (matched pairs, Eq. 4.14-4.16), ``loss_iou`` (``iou_objectness``: MSE of the predicted to
    the matched mask's IoU, Eq. 5.2), ``loss_overlap`` (``overlap_head``: focal loss of the
    overlap logits against ``overlap_target`` (B, H, W), by default the pixels of >= 2
    cytoplasm instances, guided by ``prob_map`` (B, H, W) when ``attention_map``, Eq. 4.5 or
    5.1 by ``focal_mode``). As in SparseInst the class and Dice sums are divided by the
    number of matched instances in the batch (at least 1, so an image without instances
    still trains its candidates towards background).
    """
    logits, masks = outputs["logits"].float(), outputs["masks"].float()
    b, n, k = logits.shape
    shape = tuple(masks.shape[-2:])
    gts = _check_targets(targets, b, shape, k, masks.device)
    lam = float(p["match_lambda"])
    matches = [match_instances(logits[i], masks[i], g, l, lam) for i, (g, l) in enumerate(gts)]
    n_matched = sum(len(rows) for rows, _ in matches)
    norm = float(max(n_matched, 1))

    cls_target = torch.zeros_like(logits)
    for i, ((rows, cols), (_, labels)) in enumerate(zip(matches, gts)):
        cls_target[i, rows, labels[cols] - 1] = 1.0
    # a class an image's source does not annotate (models.scope): no class loss on that image
    scope = class_scope(targets, k, logits.device)
    if scope is None:
        losses = {"cls": sigmoid_focal_loss(logits, cls_target, alpha=float(p["cls_alpha"]),
                                            gamma=float(p["cls_gamma"]), reduction="sum") / norm}
    else:
        losses = {"cls": (sigmoid_focal_loss(logits, cls_target, alpha=float(p["cls_alpha"]),
                                             gamma=float(p["cls_gamma"]), reduction="none")
                          * scope[:, None, :]).sum() / norm}
    if n_matched:
        pred = torch.cat([masks[i, rows] for i, (rows, _) in enumerate(matches)])
        target = torch.cat([g[cols] for (g, _), (_, cols) in zip(gts, matches)])
        losses["dice"] = dice_loss(pred, target).sum() / norm
        losses["bce"] = F.binary_cross_entropy_with_logits(pred, target)
    else:  # nothing to segment: zero, but keep the graph so backward() still works
        losses["dice"] = losses["bce"] = masks.sum() * 0.0
    if p["iou_objectness"]:
        objectness = outputs["objectness"].float()
        if n_matched:
            with torch.no_grad():
                iou = mask_iou(torch.sigmoid(pred) >= float(p["mask_threshold"]), target > 0.5)
            matched = torch.cat([objectness[i, rows] for i, (rows, _) in enumerate(matches)])
            losses["iou"] = F.mse_loss(torch.sigmoid(matched), iou)
        else:
            losses["iou"] = objectness.sum() * 0.0
    if p["overlap_head"]:
        if overlap_target is None:
            overlap_target = overlap_targets(targets, shape, masks.device)
        if p["attention_map"] and prob_map is None:
            raise ValueError("attention_map needs the overlap-probability map (prob_map)")
        losses["overlap"] = recalibrated_focal_loss(
            outputs["overlap"][:, 0].float(), overlap_target.to(masks.dtype),
            prob_map if p["attention_map"] else None, mode=p["focal_mode"],
            alpha=float(p["focal_alpha"]), gamma=float(p["focal_gamma"]),
            valid=None if scope is None else  # overlaps are known where cells are annotated
            scope[:, CATEGORY_IDS["cytoplasm"] - 1, None, None].expand(-1, *shape))
    return {f"loss_{name}": float(p[f"lambda_{name}"]) * value for name, value in losses.items()}


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def candidate_scores(logits: torch.Tensor, mask_logits: torch.Tensor,
                     objectness: torch.Tensor | None, mask_threshold: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores (N,), class indices (N,), binary masks (N, H, W)) of one image's candidates.

    score = class probability x maskness (Sec. 4.5.3); with an IoU head the class probability
    is first replaced by its geometric mean with the predicted IoU (SparseInst).
    """
    prob, cls = torch.sigmoid(logits).max(-1)
    if objectness is not None:
        prob = torch.sqrt(prob * torch.sigmoid(objectness))
    mask_prob = torch.sigmoid(mask_logits)
    binary = mask_prob >= mask_threshold
    area = binary.flatten(1).sum(-1)
    maskness = (mask_prob * binary).flatten(1).sum(-1) / area.clamp_min(1)
    return prob * maskness, cls, binary


def _predict_window(model: SparseSEUNet, window: np.ndarray, p: dict, origin: tuple[int, int] = (0, 0)
                    ) -> list[tuple[np.ndarray, float, int]]:
    """Candidates above the score threshold of one window (sides multiples of the stride)
    whose top-left pixel is ``origin`` (y, x) of the image."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32))[None, None].to(device)
    out = model(x, origin=torch.tensor([origin], dtype=torch.float32))
    objectness = out["objectness"][0].float() if "objectness" in out else None
    scores, cls, binary = candidate_scores(out["logits"][0].float(), out["masks"][0].float(),
                                           objectness, float(p["mask_threshold"]))
    keep = (scores >= float(p["score_threshold"])) & binary.flatten(1).any(-1)
    binary, scores, cls = binary.cpu().numpy(), scores.cpu().tolist(), cls.cpu().tolist()
    return [(binary[i], scores[i], cls[i] + 1) for i in np.flatnonzero(keep.cpu().numpy())]


def core_ranges(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    """Split ``[0, size)`` among tiles: each owns up to the middle of its overlaps."""
    bounds = [0] + [(s + prev + tile) // 2 for prev, s in zip(starts, starts[1:])] + [size]
    return list(zip(bounds[:-1], bounds[1:]))


def _pad(gray: np.ndarray, h: int, w: int) -> np.ndarray:
    ph, pw = h - gray.shape[0], w - gray.shape[1]
    return np.pad(gray, ((0, ph), (0, pw)), mode="symmetric") if ph or pw else gray


@torch.no_grad()
def predict_instances(model: SparseSEUNet, gray: np.ndarray, p: dict
                      ) -> list[tuple[np.ndarray, float, int]]:
    """Instances ``(mask bool (H, W), score, category id)`` of one grey image, best first.

    With ``input_scale`` != 1 the image is first resampled by it (the scale the network was
    trained at) and each mask resized back. The image is padded (mirrored) to a multiple of
    the network stride. Larger than ``tile`` (a multiple of the stride; null = never tile),
    it is cut into tiles every ``stride`` pixels; a tile keeps the instances whose centroid
    lies in its share of the overlaps, so each cell is taken from the tile that sees it most
    centrally. Instances whose centroid is in the padding (mirror images) are dropped.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty (H, W) grey image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ValueError("grey image contains NaN or infinite values")
    factor = float(p.get("input_scale", 1.0))
    if factor != 1.0:  # the network's pixel scale; masks go back to the image's
        found = predict_instances(model, resample(gray, factor), {**p, "input_scale": 1.0})
        back = [(resize_mask(mask, gray.shape), score, cat) for mask, score, cat in found]
        return [item for item in back if item[0].any()]
    h, w = gray.shape
    stride = model.stride
    tile = p.get("tile")
    if tile and (h > tile or w > tile):
        tile = int(tile)
        if tile % stride:
            raise ValueError(f"tile {tile} is not a multiple of the network stride {stride}")
        big_h, big_w = max(h, tile), max(w, tile)
        ys, xs = (tile_starts(big_h, tile, int(p["stride"])),
                  tile_starts(big_w, tile, int(p["stride"])))
        windows = [(y, x, tile, tile) for y in ys for x in xs]
        cores = [(cy, cx) for cy in core_ranges(ys, tile, big_h)
                 for cx in core_ranges(xs, tile, big_w)]
    else:
        big_h, big_w = -(-h // stride) * stride, -(-w // stride) * stride
        windows, cores = [(0, 0, big_h, big_w)], [((0, big_h), (0, big_w))]
    padded = _pad(gray, big_h, big_w)
    was_training = model.training
    model.eval()
    results = []
    try:
        for (y, x, th, tw), ((y0, y1), (x0, x1)) in zip(windows, cores):
            for mask, score, cat in _predict_window(model, padded[y:y + th, x:x + tw], p, (y, x)):
                rr, cc = np.nonzero(mask)
                cy, cx = y + rr.mean(), x + cc.mean()
                if not (y0 <= cy < min(y1, h) and x0 <= cx < min(x1, w)):
                    continue
                full = np.zeros((h, w), dtype=bool)
                part = mask[:h - y, :w - x]
                full[y:y + part.shape[0], x:x + part.shape[1]] = part
                results.append((full, float(score), int(cat)))
    finally:
        model.train(was_training)
    order = sorted(range(len(results)), key=lambda i: -results[i][1])  # stable: ties keep order
    return [results[i] for i in order]

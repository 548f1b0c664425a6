"""pix2pix conditional GAN, one implementation for both papers (issue 18).

* brightfield thesis ``003`` Sec. 4.4.2 / 5.5-5.6: translate the copy-paste module's additive
  composite (optical density here, phase contrast there) into a realistic image that keeps
  the composite's exact instance masks; also the weaker mask -> image variant (Fig. 5.8);
* coarse-to-fine paper ``004`` Sec. II-C (stage 3): instance masks -> raw image, supervised
  pixel-wise so image and mask boundaries stay aligned.

Objective (Isola et al.): cGAN loss of a PatchGAN that sees (condition, image) pairs plus
``lambda_l1`` (100) times the L1 distance to the real image. Images live in the generator's
tanh range [-1, 1]; conditions are rendered in [0, 1] and mapped with
:func:`to_network_range`. The training loop (seeding, resume, checkpoints) is the project's
Trainer; :func:`pix2pix_update` is the one update every pix2pix-based trainer calls and
:func:`translate_unit` the one tiled translation they synthesise with.
"""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from overlapseg.gan.networks import PatchDiscriminator, UNetGenerator, batch_statistics
from overlapseg.gan.step import StepOptions, mean_losses, set_requires_grad

GAN_MODES = ("vanilla", "lsgan")

PIX2PIX_DEFAULTS: dict = {
    "crop_size": 256,          # training crop; thesis: 512 (tiles of 1024 px images)
    "ngf": 64,
    "ndf": 64,
    "n_layers_d": 3,           # 3 -> 70x70 PatchGAN
    "norm": "batch",
    "min_size": 1,             # U-Net halves the crop down to this side
    "max_depth": None,
    "dropout": 0.5,
    "n_dropout": 3,            # decoder blocks above the bottleneck with dropout
    "dropout_at_inference": True,  # thesis Sec. 4.4.2 / 5.6: dropout as the noise source
    "gan_mode": "vanilla",     # vanilla (BCE with logits) | lsgan
    "lambda_l1": 100.0,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "boundary_width": 2,       # px, boundary class of the instance rendering
}


# ----------------------------------------------------------------------------- models
def build_pix2pix(in_channels: int, out_channels: int,
                  **params) -> tuple[UNetGenerator, PatchDiscriminator]:
    """Generator and conditional discriminator from :data:`PIX2PIX_DEFAULTS` overridden by
    ``params``; weights drawn from torch's global RNG (seed before calling)."""
    unknown = set(params) - set(PIX2PIX_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown pix2pix parameters {sorted(unknown)} "
                         f"(known: {', '.join(PIX2PIX_DEFAULTS)})")
    p = {**PIX2PIX_DEFAULTS, **params}
    G = UNetGenerator(in_channels, out_channels, ngf=p["ngf"], crop_size=p["crop_size"],
                      min_size=p["min_size"], max_depth=p["max_depth"], norm=p["norm"],
                      dropout=p["dropout"], n_dropout=p["n_dropout"],
                      dropout_at_inference=p["dropout_at_inference"])
    D = PatchDiscriminator(out_channels, cond_channels=in_channels, ndf=p["ndf"],
                           n_layers=p["n_layers_d"], norm=p["norm"])
    return G, D


# ----------------------------------------------------------------------------- losses
def gan_loss(logits: torch.Tensor, target_is_real: bool, mode: str = "vanilla") -> torch.Tensor:
    """Patch-averaged adversarial loss: BCE with logits (pix2pix) or least squares (LSGAN)."""
    target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    raise ValueError(f"unknown GAN loss {mode!r} (known: {', '.join(GAN_MODES)})")


def generator_loss(D: nn.Module, cond: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                   lambda_l1: float = PIX2PIX_DEFAULTS["lambda_l1"],
                   gan_mode: str = "vanilla") -> dict[str, torch.Tensor]:
    """``{"total", "gan", "l1"}``: total = gan + lambda_l1 * l1 (``l1`` unweighted mean |fake - real|)."""
    if fake.shape != real.shape:
        raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} differ in shape")
    adv = gan_loss(D(fake, cond), True, gan_mode)
    l1 = F.l1_loss(fake, real)
    return {"total": adv + lambda_l1 * l1, "gan": adv, "l1": l1}


def discriminator_loss(D: nn.Module, cond: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                       gan_mode: str = "vanilla") -> dict[str, torch.Tensor]:
    """``{"total", "real", "fake"}``; total halved as in pix2pix (slows D relative to G). The
    fake is detached, so this never back-propagates into the generator."""
    loss_real = gan_loss(D(real, cond), True, gan_mode)
    loss_fake = gan_loss(D(fake.detach(), cond), False, gan_mode)
    return {"total": 0.5 * (loss_real + loss_fake), "real": loss_real, "fake": loss_fake}


def _accumulated_step(opts, optimizer, params, losses, D, batches, fakes, prefix: str) -> dict:
    """One optimiser step over the micro-batches: each one's ``losses(D, cond, fake, real)``
    (finite-checked, scaled by 1/n) is back-propagated, then ``optimizer`` steps once.
    Returns the mean of each named loss."""
    n = len(batches)
    optimizer.zero_grad(set_to_none=True)
    mean: dict[str, torch.Tensor] = {}
    for (cond, real), fake in zip(batches, fakes):
        with opts.autocast():
            parts = {k: v.float() for k, v in losses(D, cond, fake, real).items()}
        opts.check(parts["total"], {f"{prefix}_{k}": v for k, v in parts.items()})
        opts.backward(parts["total"] / n)
        mean = mean_losses(mean, parts, n)
    opts.step(optimizer, params)
    return mean


def pix2pix_update(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                   opt_d: torch.optim.Optimizer, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                   lambda_l1: float = PIX2PIX_DEFAULTS["lambda_l1"], gan_mode: str = "vanilla",
                   d_losses: Callable | None = None, g_losses: Callable | None = None,
                   options: StepOptions | None = None) -> dict[str, torch.Tensor]:
    """The pix2pix update every pix2pix-based trainer runs: D on real vs detached fakes, then G
    with D frozen, each accumulated over the micro-batches ``batches`` ((condition, real) pairs,
    the Trainer's ``accumulate``) and stepped once, under ``options`` (autocast, gradient scaler,
    clipping, finite-loss check). ``d_losses``/``g_losses(D, cond, fake, real)`` default to
    :func:`discriminator_loss`/:func:`generator_loss` (a trainer passes its own hooks). Returns
    the micro-batch means ``G_total, G_gan, G_l1, D_total, D_real, D_fake`` (detached)."""
    opts = options or StepOptions()
    if d_losses is None:
        d_losses = lambda D_, c, f, r: discriminator_loss(D_, c, f, r, gan_mode)  # noqa: E731
    if g_losses is None:
        g_losses = lambda D_, c, f, r: generator_loss(D_, c, f, r, lambda_l1, gan_mode)  # noqa: E731
    with opts.autocast():
        fakes = [G(cond) for cond, _ in batches]  # one draw per batch, seen by D and G alike
    set_requires_grad(D, True)
    d_mean = _accumulated_step(opts, opt_d, D.parameters(), d_losses, D, batches, fakes, "D")
    set_requires_grad(D, False)
    try:
        g_mean = _accumulated_step(opts, opt_g, G.parameters(), g_losses, D, batches, fakes, "G")
    finally:
        set_requires_grad(D, True)
    return {**{f"G_{k}": v for k, v in g_mean.items()}, **{f"D_{k}": v for k, v in d_mean.items()}}


# ----------------------------------------------------------------------------- inference
def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _blend_window(tile: int, ndim: int) -> np.ndarray:
    """Separable tent weights (>= 1/tile everywhere) so overlapping tiles fade into each other."""
    ramp = np.minimum(np.arange(1, tile + 1), np.arange(tile, 0, -1)).astype(np.float64)
    window = ramp
    for _ in range(ndim - 1):
        window = np.multiply.outer(window, ramp)
    return window


@torch.no_grad()
def translate(G: nn.Module, cond_image: np.ndarray, tile: int, stride: int | None = None) -> np.ndarray:
    """Apply ``G`` to a condition image of any size by overlapping tiles (thesis Sec. 4.4.2
    tiles 1024 px images into 512 px windows); overlaps are blended with tent weights.

    ``cond_image``: ``(C, *spatial)`` (or ``(*spatial)`` for one channel) in network range.
    Images smaller than ``tile`` are mirror-padded. ``G`` runs as pix2pix runs it at test time:
    BatchNorm with the statistics of the tile itself (one tile per forward pass, i.e. instance
    normalisation; running statistics neither used nor changed, :func:`batch_statistics`),
    dropout only where the generator keeps it at inference (seed torch for repeatable draws);
    its previous mode is restored. Returns ``(C_out, *spatial)`` float32.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    stride = tile // 2 if stride is None else stride
    if not 1 <= stride <= tile:
        raise ValueError(f"stride must be in [1, tile={tile}], got {stride}")
    image = np.asarray(cond_image, dtype=np.float32)
    dims = getattr(G, "dims", 2)
    if image.ndim == dims:
        image = image[None]
    if image.ndim != dims + 1:
        raise ValueError(f"condition image must be (C, {dims} spatial axes), got shape {image.shape}")
    spatial = image.shape[1:]
    pad = [(0, 0)] + [(0, max(tile - s, 0)) for s in spatial]
    padded = np.pad(image, pad, mode="symmetric") if any(p[1] for p in pad) else image
    full = padded.shape[1:]
    window = _blend_window(tile, dims)
    corners = list(itertools.product(*[_tile_starts(s, tile, stride) for s in full]))
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        out = weight = None
        with batch_statistics(G):
            for corner in corners:
                win = tuple(slice(c, c + tile) for c in corner)
                batch = np.ascontiguousarray(padded[(slice(None),) + win])[None]
                pred = G(torch.from_numpy(batch).to(device))[0].float().cpu().numpy().astype(np.float64)
                if out is None:
                    out = np.zeros((pred.shape[0],) + full, np.float64)
                    weight = np.zeros(full, np.float64)
                out[(slice(None),) + win] += pred * window
                weight[win] += window
    finally:
        G.train(was_training)
    out /= weight
    return out[(slice(None),) + tuple(slice(0, s) for s in spatial)].astype(np.float32)


def translate_unit(G: nn.Module, image01: np.ndarray, tile: int, stride: int | None = None,
                   seed: int | None = None, dropout: bool | None = None) -> np.ndarray:
    """:func:`translate` between [0, 1] arrays (conditions and images as stored): the one tiled
    translation every generator trainer uses at synthesis. ``dropout`` sets whether a U-Net
    generator keeps dropout on (pix2pix's noise source, None: leave as is); ``seed`` seeds
    torch first, so the dropout draws of an image depend on the seed only."""
    if dropout is not None and hasattr(G, "set_inference_dropout"):
        G.set_inference_dropout(bool(dropout))
    if seed is not None:
        torch.manual_seed(seed)
    return from_network_range(translate(G, to_network_range(image01), tile, stride))


# ----------------------------------------------------------------------------- conditionings
def to_network_range(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> [-1, 1] (the generator's tanh range)."""
    return (2.0 * np.asarray(x, np.float32) - 1.0).astype(np.float32)


def from_network_range(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 1], clipped."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def image_to_unit(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 ``(H, W)`` or ``(H, W, C)`` image -> float32 ``(C, H, W)`` in [0, 1]."""
    if image.dtype == np.uint8:
        top = 255.0
    elif image.dtype == np.uint16:
        top = 65535.0
    elif np.issubdtype(image.dtype, np.floating):
        top = 1.0
    else:
        raise ValueError(f"images must be uint8, uint16 or float in [0, 1], got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    out = image.astype(np.float32) / top
    return out[None] if out.ndim == 2 else np.moveaxis(out, -1, 0)


def additive_condition(composite: np.ndarray) -> np.ndarray:
    """Copy-paste additive composite (``output: additive``: OD scaled to the image range) ->
    single-channel ``(1, H, W)`` float in [0, 1]; colour channels averaged (thesis Sec. 4.4.1:
    the additive domain carries the overlaps as summed densities)."""
    unit = image_to_unit(composite)
    return unit.mean(axis=0, keepdims=True).astype(np.float32)


def _masks_array(masks, name: str, shape=None) -> np.ndarray:
    arr = np.asarray(masks, dtype=bool)
    if arr.size == 0 and shape is not None:
        return np.zeros((0,) + tuple(shape), bool)
    if arr.ndim < 3:
        raise ValueError(f"{name} must be a stack (N, *spatial) of boolean masks, got shape {arr.shape}")
    if shape is not None and arr.shape[1:] != tuple(shape):
        raise ValueError(f"{name} spatial shape {arr.shape[1:]} differs from {tuple(shape)}")
    return arr


def instance_boundaries(masks: np.ndarray, width: int) -> np.ndarray:
    """Union of the inner boundaries (``width`` px) of every instance, also where instances
    overlap; image borders do not count as boundaries (a cell cut by the crop goes on)."""
    if width < 1:
        raise ValueError(f"boundary width must be >= 1, got {width}")
    out = np.zeros(masks.shape[1:], bool)
    for m in masks:
        if m.any():
            out |= m & ~ndimage.binary_erosion(m, iterations=width, border_value=1)
    return out


def render_instance_condition(cell_masks: np.ndarray, nucleus_masks: np.ndarray,
                              boundary_width: int = 2) -> np.ndarray:
    """Instance rendering for mask -> image (``004`` Sec. II-C stage 3; thesis mask2bf):
    ``(3, *spatial)`` float {0, 1} with channels cytoplasm (cells minus nuclei), nuclei, and
    the boundary class (every cell's and nucleus' contour, so overlapping cells stay visible)."""
    cells = _masks_array(cell_masks, "cell_masks")
    nuclei = _masks_array(nucleus_masks, "nucleus_masks", cells.shape[1:])
    nucleus = nuclei.any(axis=0) if len(nuclei) else np.zeros(cells.shape[1:], bool)
    cytoplasm = cells.any(axis=0) & ~nucleus if len(cells) else np.zeros(cells.shape[1:], bool)
    boundary = instance_boundaries(np.concatenate([cells, nuclei]), boundary_width)
    return np.stack([cytoplasm, nucleus, boundary]).astype(np.float32)


CONDITIONS = {"mask": 3, "composite": 1}  # pix2pix conditioning -> generator input channels


def additive_composite(image: np.ndarray, cells: np.ndarray, background: float | None = None) -> np.ndarray:
    """Additive optical-density composite of a real grey image's own cells, scaled to [0, 1].

    ``image`` float (H, W) in [0, 1]; ``cells`` bool (N, H, W). The composite is the image's OD
    (Beer-Lambert, OD = -log(I / background); background: 90th percentile of the cell-free
    pixels) inside the union of the cells and 0 on the free background, divided by its maximum.
    A real overlap pixel already carries OD_a + OD_b, so it is counted once: exactly what
    copy-paste ``output: additive`` builds when the same cells are pasted in place (each adds
    its own OD, overlaps sum, the composite is divided by its maximum), so the generator is
    trained on the domain it translates at synthesis (issue 28).
    """
    cells = np.asarray(cells, bool)
    union = cells.any(axis=0) if len(cells) else np.zeros(image.shape, bool)
    if background is None:
        free = image[~union]
        background = float(np.percentile(free, 90)) if free.size else float(image.max())
    od = -np.log(np.clip(image, 1e-3, None) / max(background, 1e-3))
    od = np.where(union, np.clip(od, 0, None), 0.0)
    return (od / max(float(od.max()), 1e-6)).astype(np.float32)


def condition_image(condition: str, image: np.ndarray | None, cells: np.ndarray,
                    nuclei: np.ndarray, boundary_width: int) -> np.ndarray:
    """The pix2pix generator input ``(C, H, W)`` in [0, 1] of one real image (``mask``: the
    instance rendering; ``composite``: :func:`additive_composite`)."""
    if condition == "mask":
        return render_instance_condition(cells, nuclei, boundary_width)
    if condition == "composite":
        return additive_composite(image, cells)[None]
    raise ValueError(f"unknown pix2pix condition {condition!r} ({' | '.join(CONDITIONS)})")


# ----------------------------------------------------------------------------- data
def sample_paired_crops(cond: np.ndarray, target: np.ndarray, crop: int, n: int,
                        rng: np.random.Generator, flips: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n`` aligned random crops ``(n, C, crop, crop)`` of a condition/target pair
    ``(C, *spatial)``; smaller images are mirror-padded, and with ``flips`` each crop gets the
    same random flips (and, in 2D, transpose) in both arrays."""
    cond, target = np.asarray(cond, np.float32), np.asarray(target, np.float32)
    if cond.ndim < 3 or cond.shape[1:] != target.shape[1:]:
        raise ValueError(f"condition {cond.shape} and target {target.shape} must be (C, *spatial) "
                         "with equal spatial sizes")
    if crop < 1 or n < 1:
        raise ValueError(f"crop and n must be >= 1, got {crop}, {n}")
    pad = [(0, 0)] + [(0, max(crop - s, 0)) for s in cond.shape[1:]]
    if any(p[1] for p in pad):
        cond, target = np.pad(cond, pad, mode="symmetric"), np.pad(target, pad, mode="symmetric")
    spatial = cond.shape[1:]
    out_c, out_t = [], []
    for _ in range(n):
        win = (slice(None),) + tuple(slice(o, o + crop) for o in
                                     (int(rng.integers(0, s - crop + 1)) for s in spatial))
        c, t = cond[win], target[win]
        if flips:
            for axis in range(1, c.ndim):
                if rng.random() < 0.5:
                    c, t = np.flip(c, axis), np.flip(t, axis)
            if c.ndim == 3 and rng.random() < 0.5:
                c, t = c.transpose(0, 2, 1), t.transpose(0, 2, 1)
        out_c.append(np.ascontiguousarray(c))
        out_t.append(np.ascontiguousarray(t))
    return np.stack(out_c), np.stack(out_t)

"""CycleGAN for the coarse-to-fine generator's stages 1 and 2 (paper ``004`` Sec. II-A/B).

Stage 1 maps the point domain (seed points) to the box domain (ovals) from *unpaired*
images; stage 2 maps coloured box ovals to coloured masks but, as the paper proposes, is fed
the *corresponding* (box, mask) pair of each real image, so besides the usual adversarial and
L1 cycle terms (Zhu et al.) it can add a paired L1 term (the paper's MAE; weak by default
because the paper only wants F(B_i) to look like a real mask, not to equal S_i).

Generators are the U-Net of ``004`` Sec. III (or CycleGAN's ResNet), discriminators PatchGANs,
all from :mod:`overlapseg.gan.networks`. :func:`cyclegan_update` is the one update every
CycleGAN-based trainer calls; :class:`ImagePool` the one history of fakes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from overlapseg.gan.networks import PatchDiscriminator, ResnetGenerator, UNetGenerator
from overlapseg.gan.pix2pix import gan_loss
from overlapseg.gan.step import StepOptions, mean_losses

GENERATORS = ("unet", "resnet")

CYCLEGAN_DEFAULTS: dict = {
    "generator": "unet",       # 004 Sec. III: encoder-decoder with skips, tanh output
    "crop_size": 256,          # sets the U-Net depth
    "ngf": 64,
    "ndf": 64,
    "n_blocks": 9,             # ResNet generator only
    "n_down": 2,               # ResNet generator only
    "n_layers_d": 3,           # 70x70 PatchGAN
    "norm": "instance",        # CycleGAN's choice (batch size 1)
    "gan_mode": "lsgan",       # CycleGAN's least-squares adversarial loss
    "lambda_cycle": 10.0,
    "lambda_identity": 0.5,    # relative to lambda_cycle; needs equal channel counts
    "paired_l1": 0.0,          # stage 2 (corresponding pairs): weight of |G_ab(a) - b| etc.
    "pool_size": 50,           # history of generated images shown to D (0: none)
    "lr": 2e-4,
    "betas": (0.5, 0.999),
}


def build_cyclegan(channels_a: int, channels_b: int, **params) -> dict[str, nn.Module]:
    """``{"G_ab", "G_ba", "D_a", "D_b"}`` from :data:`CYCLEGAN_DEFAULTS` overridden by
    ``params`` (training-only keys are accepted and ignored here)."""
    unknown = set(params) - set(CYCLEGAN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown CycleGAN parameters {sorted(unknown)} "
                         f"(known: {', '.join(CYCLEGAN_DEFAULTS)})")
    p = {**CYCLEGAN_DEFAULTS, **params}
    if p["generator"] not in GENERATORS:
        raise ValueError(f"unknown CycleGAN generator {p['generator']!r} "
                         f"(known: {', '.join(GENERATORS)})")

    def generator(c_in: int, c_out: int) -> nn.Module:
        if p["generator"] == "unet":
            # no dropout: CycleGAN draws no noise, and stage outputs must be repeatable
            return UNetGenerator(c_in, c_out, ngf=p["ngf"], crop_size=p["crop_size"],
                                 norm=p["norm"], dropout=0.0)
        return ResnetGenerator(c_in, c_out, ngf=p["ngf"], n_blocks=p["n_blocks"],
                               n_down=p["n_down"], norm=p["norm"])

    return {"G_ab": generator(channels_a, channels_b), "G_ba": generator(channels_b, channels_a),
            "D_a": PatchDiscriminator(channels_a, ndf=p["ndf"], n_layers=p["n_layers_d"], norm=p["norm"]),
            "D_b": PatchDiscriminator(channels_b, ndf=p["ndf"], n_layers=p["n_layers_d"], norm=p["norm"])}


class ImagePool(nn.Module):
    """History of generated images (Shrivastava et al., used by CycleGAN): D sees, with
    probability 1/2 per image, an older fake instead of the newest, which damps oscillation.

    The history lives in buffers, so a trainer that checkpoints its model's state resumes with
    the same history; the 1/2 swap draws come from ``rng``, a numpy Generator the caller sets
    for each iteration (e.g. from (seed, iteration)), so there is no hidden RNG state."""

    def __init__(self, size: int, channels: int, crop: int):
        super().__init__()
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.register_buffer("images", torch.zeros(self.size, channels, crop, crop))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.rng: np.random.Generator | None = None

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        if self.rng is None:
            raise RuntimeError("ImagePool: set .rng for this iteration before query()")
        out = []
        for img in images:
            n = int(self.count)
            if n < self.size:
                self.images[n] = img
                self.count += 1
                out.append(img)
            elif self.rng.random() < 0.5:
                k = int(self.rng.integers(self.size))
                out.append(self.images[k].clone().to(img.dtype))
                self.images[k] = img
            else:
                out.append(img)
        return torch.stack(out)


def cyclegan_losses(G_ab: nn.Module, G_ba: nn.Module, D_a: nn.Module, D_b: nn.Module,
                    a: torch.Tensor, b: torch.Tensor,
                    lambda_cycle: float = CYCLEGAN_DEFAULTS["lambda_cycle"],
                    lambda_identity: float = CYCLEGAN_DEFAULTS["lambda_identity"],
                    paired_l1: float = CYCLEGAN_DEFAULTS["paired_l1"],
                    gan_mode: str = CYCLEGAN_DEFAULTS["gan_mode"],
                    pool_a: ImagePool | None = None,
                    pool_b: ImagePool | None = None) -> dict[str, torch.Tensor]:
    """Generator and discriminator losses of one batch ``(a, b)``, one flat dict.

    Generators: ``G_total, G_gan_ab, G_gan_ba, G_cycle_a, G_cycle_b, G_idt_a, G_idt_b,
    G_paired`` - the parts are unweighted; ``G_total`` = gan terms + ``lambda_cycle`` * cycle
    L1 + ``lambda_cycle * lambda_identity`` * identity L1 + ``paired_l1`` * paired L1, where
    the paired L1 (``|G_ab(a) - b| + |G_ba(b) - a|``) assumes ``a`` and ``b`` correspond.
    Discriminators: ``D_total, D_a, D_b`` on real vs detached (pooled) fakes, each halved as
    in CycleGAN.
    """
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"domain batches {tuple(a.shape)} and {tuple(b.shape)} must share "
                         "batch and spatial size")
    if lambda_identity > 0 and a.shape[1] != b.shape[1]:
        raise ValueError(f"identity loss needs equal channel counts (a: {a.shape[1]}, b: {b.shape[1]}); "
                         "set lambda_identity = 0")
    fake_b, fake_a = G_ab(a), G_ba(b)
    rec_a, rec_b = G_ba(fake_b), G_ab(fake_a)
    zero = a.new_zeros(())
    gen = {"gan_ab": gan_loss(D_b(fake_b), True, gan_mode),
           "gan_ba": gan_loss(D_a(fake_a), True, gan_mode),
           "cycle_a": F.l1_loss(rec_a, a), "cycle_b": F.l1_loss(rec_b, b),
           "idt_a": zero, "idt_b": zero, "paired": zero}
    if lambda_identity > 0:
        gen["idt_a"] = F.l1_loss(G_ba(a), a)   # G_ba should leave a real ``a`` unchanged
        gen["idt_b"] = F.l1_loss(G_ab(b), b)
    if paired_l1 > 0:
        gen["paired"] = F.l1_loss(fake_b, b) + F.l1_loss(fake_a, a)
    gen["total"] = (gen["gan_ab"] + gen["gan_ba"]
                    + lambda_cycle * (gen["cycle_a"] + gen["cycle_b"])
                    + lambda_cycle * lambda_identity * (gen["idt_a"] + gen["idt_b"])
                    + paired_l1 * gen["paired"])
    old_b = pool_b.query(fake_b) if pool_b is not None else fake_b.detach()
    old_a = pool_a.query(fake_a) if pool_a is not None else fake_a.detach()
    d_b = 0.5 * (gan_loss(D_b(b), True, gan_mode) + gan_loss(D_b(old_b.detach()), False, gan_mode))
    d_a = 0.5 * (gan_loss(D_a(a), True, gan_mode) + gan_loss(D_a(old_a.detach()), False, gan_mode))
    return {**{f"G_{k}": v for k, v in gen.items()}, "D_total": d_a + d_b, "D_a": d_a, "D_b": d_b}


def cyclegan_update(nets: dict[str, nn.Module] | nn.ModuleDict, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer,
                    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                    losses: Callable[..., dict[str, torch.Tensor]] | None = None,
                    pools: tuple[ImagePool | None, ImagePool | None] = (None, None),
                    options: StepOptions | None = None, **weights) -> dict[str, torch.Tensor]:
    """The CycleGAN update every CycleGAN-based trainer runs: generators and discriminators
    from the same forward pass, each total back-propagated into its own networks only
    (the D terms use detached fakes, so D's update equals CycleGAN's D-after-G step), the
    gradients accumulated over the micro-batches ``batches`` ((a, b) pairs, the Trainer's
    ``accumulate``), one step each, under ``options`` (autocast, scaler, clipping, finite
    check). ``losses(nets, a, b, pool_a, pool_b)`` defaults to :func:`cyclegan_losses` with
    ``weights`` (``lambda_cycle``, ``lambda_identity``, ``paired_l1``, ``gan_mode``).
    Returns the micro-batch means of every loss (detached)."""
    opts = options or StepOptions()
    if losses is None:
        def losses(nets_, a_, b_, pool_a_, pool_b_):
            return cyclegan_losses(nets_["G_ab"], nets_["G_ba"], nets_["D_a"], nets_["D_b"], a_, b_,
                                   pool_a=pool_a_, pool_b=pool_b_, **weights)
    g_params = [q for k in ("G_ab", "G_ba") for q in nets[k].parameters()]
    d_params = [q for k in ("D_a", "D_b") for q in nets[k].parameters()]
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    n, mean = len(batches), {}
    for a, b in batches:
        with opts.autocast():
            parts = {k: v.float() for k, v in losses(nets, a, b, *pools).items()}
        opts.check(parts["G_total"] + parts["D_total"], parts)
        opts.backward(parts["G_total"] / n, inputs=g_params)
        opts.backward(parts["D_total"] / n, inputs=d_params)
        mean = mean_losses(mean, parts, n)
    opts.step(opt_g, g_params)
    opts.step(opt_d, d_params)
    return mean

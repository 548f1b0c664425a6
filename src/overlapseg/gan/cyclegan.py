"""CycleGAN for the coarse-to-fine generator's stages 1 and 2 (paper ``004`` Sec. II-A/B).

Stage 1 maps the point domain (seed points) to the box domain (ovals) from *unpaired*
images; stage 2 maps coloured box ovals to coloured masks but, as the paper proposes, is fed
the *corresponding* (box, mask) pair of each real image, so besides the usual adversarial and
L1 cycle terms (Zhu et al.) it can add a paired L1 term (the paper's MAE; weak by default
because the paper only wants F(B_i) to look like a real mask, not to equal S_i).

Generators are the U-Net of ``004`` Sec. III (or CycleGAN's ResNet), discriminators PatchGANs,
all from :mod:`overlapseg.gan.networks`. :func:`cyclegan_step` is the update a Trainer calls.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from overlapseg.gan.networks import PatchDiscriminator, ResnetGenerator, UNetGenerator
from overlapseg.gan.pix2pix import gan_loss

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


def make_optimizers(nets: dict[str, nn.Module], lr: float = CYCLEGAN_DEFAULTS["lr"],
                    betas: Sequence[float] = CYCLEGAN_DEFAULTS["betas"],
                    ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """One Adam over both generators and one over both discriminators (as CycleGAN)."""
    betas = tuple(float(b) for b in betas)
    gen = list(nets["G_ab"].parameters()) + list(nets["G_ba"].parameters())
    disc = list(nets["D_a"].parameters()) + list(nets["D_b"].parameters())
    return torch.optim.Adam(gen, lr=lr, betas=betas), torch.optim.Adam(disc, lr=lr, betas=betas)


class ImagePool:
    """History of generated images (Shrivastava et al., used by CycleGAN): D sees, with
    probability 1/2 per image, an older fake instead of the newest, which damps oscillation.
    Draws from its own numpy Generator; ``state_dict`` makes a resumed run exact."""

    def __init__(self, size: int, seed: int = 0):
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = np.random.default_rng(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for img in images:
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() < 0.5:
                k = int(self.rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [t.cpu() for t in self.images],
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.images = [t.clone() for t in state["images"]]
        self.rng.bit_generator.state = state["rng"]


def cyclegan_losses(G_ab: nn.Module, G_ba: nn.Module, D_a: nn.Module, D_b: nn.Module,
                    a: torch.Tensor, b: torch.Tensor,
                    lambda_cycle: float = CYCLEGAN_DEFAULTS["lambda_cycle"],
                    lambda_identity: float = CYCLEGAN_DEFAULTS["lambda_identity"],
                    paired_l1: float = CYCLEGAN_DEFAULTS["paired_l1"],
                    gan_mode: str = CYCLEGAN_DEFAULTS["gan_mode"],
                    pool_a: ImagePool | None = None,
                    pool_b: ImagePool | None = None,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Generator and discriminator losses of one batch ``(a, b)``.

    Generators: ``{"total", "gan_ab", "gan_ba", "cycle_a", "cycle_b", "idt_a", "idt_b",
    "paired"}`` - the entries are unweighted; ``total`` = gan terms + ``lambda_cycle`` * cycle
    L1 + ``lambda_cycle * lambda_identity`` * identity L1 + ``paired_l1`` * paired L1, where
    the paired L1 (``|G_ab(a) - b| + |G_ba(b) - a|``) assumes ``a`` and ``b`` correspond.
    Discriminators: ``{"total", "D_a", "D_b"}`` on real vs detached (pooled) fakes, each
    halved as in CycleGAN.
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
    return gen, {"total": d_a + d_b, "D_a": d_a, "D_b": d_b}


def cyclegan_step(nets: dict[str, nn.Module], opt_g: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, a: torch.Tensor, b: torch.Tensor,
                  pools: tuple[ImagePool, ImagePool] | None = None, **weights) -> dict[str, float]:
    """One CycleGAN update: generators (discriminators frozen), then discriminators.
    ``weights``: ``lambda_cycle``, ``lambda_identity``, ``paired_l1``, ``gan_mode``."""
    for net in nets.values():
        net.train()
    pool_a, pool_b = pools if pools is not None else (None, None)
    gen, disc = cyclegan_losses(nets["G_ab"], nets["G_ba"], nets["D_a"], nets["D_b"], a, b,
                                pool_a=pool_a, pool_b=pool_b, **weights)
    # The discriminator terms use detached fakes and D parameters that the generator step
    # leaves untouched, so computing them before the G update gives CycleGAN's D update. The
    # gradients the G loss leaves on D are cleared before D's own backward pass.
    opt_g.zero_grad(set_to_none=True)
    gen["total"].backward()
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)
    disc["total"].backward()
    opt_d.step()
    return {**{f"G_{k}": float(v.detach()) for k, v in gen.items()},
            **{f"D_{k}": float(v.detach()) for k, v in disc.items()}}

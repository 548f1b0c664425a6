"""SEU-Net: a U-Net with Squeeze-and-Excitation blocks and decoupled decoder heads.

Brightfield thesis (``003``), Sec. 4.2.1-4.2.3 and 4.3:

* every encoder and decoder block ends in an SE block (Hu et al.): global average pooling
  squeezes each channel to one number, two fully connected layers (ReLU, then sigmoid) turn
  that vector into per-channel weights, and the block output is rescaled channel-wise;
* one shared encoder, and one *separate decoder branch per predicted class* ("decoupled
  decoders", Fig. 4.4c), so each class learns its own upsampling path and output layer;
* head configurations of the study (Tables 5.1-5.2): ``base`` (cytoplasm), ``2-head``
  (+ nucleus), ``3-head`` (cytoplasm, border, background), ``4-head`` (all four), and an
  optional ``overlap`` branch (pixels of >= 2 cells, Sec. 4.3 / Table 5.3) on top of any.

The network takes one grey channel in [0, 1] (``overlapseg.data.preprocess.to_float_gray``)
and returns logits ``(B, K, H, W)`` with channels ordered as :attr:`SEUNet.heads`. Inputs of
any size are accepted: they are padded (reflect) up to a multiple of ``2**depth`` and cropped
back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: network and loss params of the SEU-Net family (the trainer adds its recipe and inference
#: keys; SparseSEU-Net builds on them). Trained from scratch: the thesis uses no ImageNet
#: encoder, so the SEU-Net trainers accept ``init: scratch`` or a warm start ``{from: ...}`` only.
SEUNET_MODEL_DEFAULTS: dict = {
    "heads": "2-head",            # base | 2-head | 3-head | 4-head
    "overlap": False,             # extra overlap decoder branch
    "base_channels": 32,
    "depth": 4,
    "norm": "batch",              # batch | group | none
    "se_reduction": 8,
    "prior_init": True,           # output biases start at the logit of each class's frequency
    # overlap loss (the map variant comes from the experiment's inputs.maps)
    "focal_mode": "recalibrate",  # recalibrate (Eq. 4.5) | reweight (Eq. 5.1)
    "focal_alpha": 0.25,
    "focal_gamma": 2.0,
}

HEAD_CONFIGS: dict[str, tuple[str, ...]] = {
    "base": ("cytoplasm",),
    "2-head": ("cytoplasm", "nucleus"),
    "3-head": ("cytoplasm", "border", "background"),
    "4-head": ("cytoplasm", "nucleus", "border", "background"),
}


def head_names(heads: str, overlap: bool = False) -> tuple[str, ...]:
    """Output classes of a head configuration, ``overlap`` appended when requested."""
    if heads not in HEAD_CONFIGS:
        raise ValueError(f"unknown SEU-Net head configuration {heads!r}; "
                         f"known: {', '.join(HEAD_CONFIGS)}")
    return HEAD_CONFIGS[heads] + (("overlap",) if overlap else ())


class SEBlock(nn.Module):
    """Squeeze-and-Excitation channel reweighting (thesis Sec. 4.2.1)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel weights in (0, 1), shape (B, C)."""
        squeezed = x.mean(dim=(2, 3))  # global average pooling
        return torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)[:, :, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (batch, group or none)")


class SEConvBlock(nn.Module):
    """Two 3x3 conv -> norm -> ReLU layers followed by an SE block."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch", reduction: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"), _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"), _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )
        self.se = SEBlock(c_out, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.body(x))


class Decoder(nn.Module):
    """One decoupled decoder branch: upsample, concatenate the skip, SE conv block; 1x1 out."""

    def __init__(self, channels: list[int], norm: str, reduction: int):
        super().__init__()
        # channels: encoder widths from shallow to deep, the last one is the bottleneck
        self.up = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for deep, skip in zip(channels[:0:-1], channels[-2::-1]):
            self.up.append(nn.ConvTranspose2d(deep, skip, 2, stride=2))
            self.blocks.append(SEConvBlock(2 * skip, skip, norm, reduction))
        self.out = nn.Conv2d(channels[0], 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, block, skip in zip(self.up, self.blocks, feats[-2::-1]):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.out(x)


class SEUNet(nn.Module):
    """Shared SE encoder + one decoder branch per output class (logits, channel per head)."""

    def __init__(self, heads: tuple[str, ...] | list[str] = ("cytoplasm",), in_channels: int = 1,
                 base_channels: int = 32, depth: int = 4, norm: str = "batch",
                 se_reduction: int = 8):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not heads:
            raise ValueError("SEU-Net needs at least one head")
        self.heads = tuple(heads)
        self.depth = depth
        channels = [base_channels * 2 ** i for i in range(depth + 1)]
        self.encoder = nn.ModuleList()
        c_prev = in_channels
        for c in channels:
            self.encoder.append(SEConvBlock(c_prev, c, norm, se_reduction))
            c_prev = c
        self.decoders = nn.ModuleDict({h: Decoder(channels, norm, se_reduction) for h in self.heads})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        feats = []
        for k, block in enumerate(self.encoder):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        out = torch.cat([self.decoders[hd](feats) for hd in self.heads], dim=1)
        return out[..., :h, :w]


def build_seunet(params: dict) -> SEUNet:
    """Model from trainer params (``heads``, ``overlap``, ``base_channels``, ``depth``, ``norm``)."""
    return SEUNet(heads=head_names(params["heads"], bool(params.get("overlap", False))),
                  base_channels=int(params["base_channels"]), depth=int(params["depth"]),
                  norm=params.get("norm", "batch"), se_reduction=int(params.get("se_reduction", 8)))

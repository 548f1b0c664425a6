"""GAN building blocks shared by pix2pix and CycleGAN (synthesis stage, issues 18-19).

* :class:`UNetGenerator` - the pix2pix encoder-decoder with skips (Isola et al.; brightfield
  thesis ``003`` Sec. 4.4.2; coarse-to-fine paper ``004`` Sec. III): 4x4 stride-2 convs,
  BatchNorm, LeakyReLU(0.2) down / ReLU up, dropout 0.5 in the innermost decoder blocks
  (optionally kept on at inference, the thesis' source of output diversity), tanh output.
  Its depth follows the crop size (the thesis' nine levels are 512 px down to 1x1).
* :class:`ResnetGenerator` - CycleGAN's residual generator (Zhu et al.), an alternative for
  the coarse-to-fine stages 1-2.
* :class:`PatchDiscriminator` - the 70x70 PatchGAN (C64-C128-C256-C512, 4x4 kernels), with
  optional conditioning by channel concatenation (pix2pix); :func:`receptive_field`
  computes its receptive field from the layers themselves.

Every layer comes from dimension-agnostic factories (:func:`conv`, :func:`conv_transpose`,
:func:`norm_layer`, :func:`reflection_pad`), so a 3D variant (``dims=3``, ellipsoids/voxels in
``004``) is a constructor argument.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "none")


# ----------------------------------------------------------------------------- factories
def _check_dims(dims: int) -> None:
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, got {dims!r}")


def conv(dims: int) -> type[nn.Module]:
    """Convolution class for ``dims`` spatial dimensions (Conv1d/2d/3d)."""
    _check_dims(dims)
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]


def conv_transpose(dims: int) -> type[nn.Module]:
    _check_dims(dims)
    return {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


def reflection_pad(dims: int) -> type[nn.Module]:
    _check_dims(dims)
    return {1: nn.ReflectionPad1d, 2: nn.ReflectionPad2d, 3: nn.ReflectionPad3d}[dims]


def norm_layer(kind: str, dims: int, channels: int) -> nn.Module:
    """``batch`` (pix2pix), ``instance`` (CycleGAN, no affine/running stats as there) or ``none``."""
    _check_dims(dims)
    if kind == "batch":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "instance":
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (known: {', '.join(NORMS)})")


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix/CycleGAN initialisation: conv weights ~ N(0, gain), norm scales ~ N(1, gain),
    biases 0. Drawn from torch's global RNG, so a fixed ``torch.manual_seed`` fixes the net."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                          nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


class InferenceDropout(nn.Module):
    """Dropout that can stay active in eval mode (``always_on``): pix2pix and the thesis
    (Sec. 4.4.2, 5.6) keep dropout 0.5 at test time as the generator's noise source."""

    def __init__(self, p: float = 0.5, always_on: bool = False):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.always_on = always_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=self.training or self.always_on)

    def extra_repr(self) -> str:
        return f"p={self.p}, always_on={self.always_on}"


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[nn.Module]:
    """Apply ``module`` as pix2pix does at test time: its BatchNorm layers normalise with the
    statistics of the input batch (at batch size 1: instance normalisation), never with the
    running statistics, and leave those untouched; every other layer keeps its mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    try:
        for m in norms:
            # training + no tracking: F.batch_norm gets no running buffers, uses batch statistics
            m.training, m.track_running_stats = True, False
        yield module
    finally:
        for m, (training, tracking) in zip(norms, saved):
            m.training, m.track_running_stats = training, tracking


# ----------------------------------------------------------------------------- U-Net
def unet_depth(crop_size: int, min_size: int = 1, max_depth: int | None = None) -> int:
    """Number of stride-2 levels for a crop: halve while the side stays an integer >= ``min_size``
    (256 -> 8 levels to 1x1 as pix2pix's ``unet_256``; 512 -> 9 as the thesis)."""
    if crop_size < 2 or min_size < 1:
        raise ValueError(f"crop_size >= 2 and min_size >= 1 required, got {crop_size}, {min_size}")
    depth, size = 0, crop_size
    while size % 2 == 0 and size // 2 >= min_size and (max_depth is None or depth < max_depth):
        size //= 2
        depth += 1
    if depth < 2:
        raise ValueError(f"crop size {crop_size} allows fewer than 2 stride-2 levels "
                         f"(min_size={min_size}); use a crop divisible by 4")
    return depth


class UNetGenerator(nn.Module):
    """pix2pix U-Net generator (thesis Sec. 4.4.2; ``004`` Sec. III uses the same design).

    Level ``i`` has ``ngf * min(2**i, 8)`` channels. As in pix2pix the outermost down-conv and
    the innermost (bottleneck) level have no norm (a 1x1 bottleneck cannot be batch-normalised
    with batch size 1), and the ``n_dropout`` decoder levels just above the bottleneck apply
    dropout 0.5. Inputs must have sides divisible by ``2**depth``.
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64,
                 crop_size: int = 256, depth: int | None = None, min_size: int = 1,
                 max_depth: int | None = None, norm: str = "batch", dropout: float = 0.5,
                 n_dropout: int = 3, dropout_at_inference: bool = False, dims: int = 2):
        super().__init__()
        if in_channels < 1 or out_channels < 1 or ngf < 1:
            raise ValueError("in_channels, out_channels and ngf must be >= 1")
        self.depth = depth if depth is not None else unet_depth(crop_size, min_size, max_depth)
        if self.depth < 2:
            raise ValueError(f"U-Net depth must be >= 2, got {self.depth}")
        self.dims = dims
        Conv, ConvT = conv(dims), conv_transpose(dims)
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        ch = [ngf * min(2 ** i, 8) for i in range(self.depth)]
        self.down = nn.ModuleList()
        for i in range(self.depth):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(Conv(in_channels if i == 0 else ch[i - 1], ch[i], 4, 2, 1, bias=bias))
            if 0 < i < self.depth - 1:
                layers.append(norm_layer(norm, dims, ch[i]))
            self.down.append(nn.Sequential(*layers))
        dropout_levels = set(range(max(1, self.depth - 1 - n_dropout), self.depth - 1))
        self.up = nn.ModuleList()
        for j in range(self.depth - 1, -1, -1):  # innermost first
            c_in = ch[j] if j == self.depth - 1 else 2 * ch[j]
            if j == 0:
                layers = [nn.ReLU(), ConvT(c_in, out_channels, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(), ConvT(c_in, ch[j - 1], 4, 2, 1, bias=bias),
                          norm_layer(norm, dims, ch[j - 1])]
                if j in dropout_levels and dropout > 0:
                    layers.append(InferenceDropout(dropout, dropout_at_inference))
            self.up.append(nn.Sequential(*layers))
        init_weights(self)

    @property
    def multiple(self) -> int:
        return 2 ** self.depth

    def set_inference_dropout(self, on: bool) -> None:
        """Keep dropout active in eval mode (diverse outputs) or not (deterministic outputs)."""
        for m in self.modules():
            if isinstance(m, InferenceDropout):
                m.always_on = bool(on)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        if len(spatial) != self.dims or any(s % self.multiple for s in spatial):
            raise ValueError(f"U-Net input of spatial size {tuple(spatial)}: expected {self.dims} "
                             f"sides divisible by {self.multiple} (depth {self.depth})")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for k, block in enumerate(self.up):
            x = block(x)
            if k < len(self.up) - 1:
                x = torch.cat([skips.pop(), x], dim=1)
        return x


# ----------------------------------------------------------------------------- ResNet
class ResnetBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dims: int, dropout: float = 0.0):
        super().__init__()
        Conv, Pad = conv(dims), reflection_pad(dims)
        bias = norm != "batch"
        layers: list[nn.Module] = [Pad(1), Conv(channels, channels, 3, bias=bias),
                                   norm_layer(norm, dims, channels), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [Pad(1), Conv(channels, channels, 3, bias=bias), norm_layer(norm, dims, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN generator (Zhu et al.): 7x7 stem, ``n_down`` stride-2 convs, ``n_blocks``
    residual blocks, mirrored transposed convs, 7x7 head, tanh. Sides divisible by
    ``2**n_down``."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 n_down: int = 2, norm: str = "instance", dims: int = 2):
        super().__init__()
        if n_blocks < 0 or n_down < 0:
            raise ValueError("n_blocks and n_down must be >= 0")
        Conv, ConvT, Pad = conv(dims), conv_transpose(dims), reflection_pad(dims)
        bias = norm != "batch"
        self.dims, self.multiple = dims, 2 ** n_down
        layers: list[nn.Module] = [Pad(3), Conv(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, dims, ngf), nn.ReLU()]
        c = ngf
        for _ in range(n_down):
            layers += [Conv(c, 2 * c, 3, 2, 1, bias=bias), norm_layer(norm, dims, 2 * c), nn.ReLU()]
            c *= 2
        layers += [ResnetBlock(c, norm, dims) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [ConvT(c, c // 2, 3, 2, 1, output_padding=1, bias=bias),
                       norm_layer(norm, dims, c // 2), nn.ReLU()]
            c //= 2
        layers += [Pad(3), Conv(c, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        if len(spatial) != self.dims or any(s % self.multiple for s in spatial):
            raise ValueError(f"ResNet generator input of spatial size {tuple(spatial)}: expected "
                             f"{self.dims} sides divisible by {self.multiple}")
        return self.model(x)


# ----------------------------------------------------------------------------- PatchGAN
class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix; thesis Sec. 4.4.2): ``n_layers`` stride-2 4x4 convs
    (C64-C128-C256 for 3), one stride-1 C512 and a stride-1 1-channel output conv, so each
    output logit judges one 70x70 patch. The outermost conv has no norm. With
    ``cond_channels > 0`` the input image is concatenated to the condition (pix2pix)."""

    def __init__(self, in_channels: int, cond_channels: int = 0, ndf: int = 64,
                 n_layers: int = 3, norm: str = "batch", dims: int = 2):
        super().__init__()
        if in_channels < 1 or cond_channels < 0 or n_layers < 0:
            raise ValueError("in_channels >= 1, cond_channels >= 0 and n_layers >= 0 required")
        Conv = conv(dims)
        bias = norm != "batch"
        self.in_channels, self.cond_channels = in_channels, cond_channels
        layers: list[nn.Module] = [Conv(in_channels + cond_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for n in range(1, n_layers + 1):
            c_out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [Conv(c, c_out, 4, stride, 1, bias=bias), norm_layer(norm, dims, c_out),
                       nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(Conv(c, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Patch logits ``(B, 1, ...)``; ``cond`` required iff built with ``cond_channels``."""
        if self.cond_channels:
            if cond is None:
                raise ValueError("conditional PatchGAN needs the condition image")
            if cond.shape[1] != self.cond_channels or cond.shape[2:] != x.shape[2:]:
                raise ValueError(f"condition shape {tuple(cond.shape)} does not match "
                                 f"{self.cond_channels} channels x {tuple(x.shape[2:])}")
            x = torch.cat([cond, x], dim=1)
        elif cond is not None:
            raise ValueError("unconditional PatchGAN got a condition image")
        return self.model(x)


_RF_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
              nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _first(v) -> int:
    values = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    if len(set(values)) != 1:
        raise ValueError(f"receptive_field needs isotropic layers, got {values}")
    return int(values[0])


def layer_specs(module: nn.Module) -> list[tuple[int, int, int]]:
    """(kernel, stride, dilation) of the conv/pool layers of a feed-forward chain, in order."""
    specs = []
    for m in module.modules():
        if isinstance(m, _RF_LAYERS):
            dilation = getattr(m, "dilation", 1)
            specs.append((_first(m.kernel_size), _first(m.stride), _first(dilation)))
    return specs


def receptive_field(layers: nn.Module | Iterable[Sequence[int]]) -> int:
    """Receptive field (pixels per side) of one output unit of a chain of layers.

    ``layers``: a module (its conv/pool layers taken in registration order, so only for plain
    feed-forward chains such as :class:`PatchDiscriminator`) or ``(kernel, stride[, dilation])``
    specs. Recurrence: ``rf += (k - 1) * dilation * jump; jump *= stride``.
    """
    specs = layer_specs(layers) if isinstance(layers, nn.Module) else [tuple(s) for s in layers]
    if not specs:
        raise ValueError("receptive_field: no conv/pool layers given")
    rf, jump = 1, 1
    for spec in specs:
        if len(spec) not in (2, 3) or min(spec) < 1:
            raise ValueError(f"layer spec must be (kernel, stride[, dilation]) >= 1, got {spec}")
        k, s = spec[0], spec[1]
        d = spec[2] if len(spec) == 3 else 1
        rf += (k - 1) * d * jump
        jump *= s
    return rf

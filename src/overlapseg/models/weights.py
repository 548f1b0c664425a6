"""Pretrained backbone weights: torchvision's ImageNet ResNet files, loading them, warm starts.

DoNet, IRNet and the CC framework start from an ImageNet-pretrained ResNet-50 (DoNet:
Detectron2's ``R-50.pkl`` with FrozenBN). Here the file is torchvision's
``ResNet*_Weights.IMAGENET1K_V1`` (the one torchvision's pretrained Mask R-CNN uses),
fetched once by ``overlapseg weights fetch`` into ``resources/weights/`` (hash-checked by
torch.hub) or found there or in the torch hub cache. Training only reads the file.

A network set up for such weights (``frozen_bn=True`` in the builders) uses
:class:`FrozenBatchNorm2d` in its ResNet, freezes the stem and ``layer1`` (Detectron2's
``FREEZE_AT=2``, torchvision's ``trainable_backbone_layers=3``) and normalises the grey
input (replicated to RGB) with ImageNet's mean/std, so the pretrained features are what
torchvision's ResNet computes in eval mode. From scratch it keeps trainable GroupNorm and
the project's grey normalisation (0.5/0.25).
"""
from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from overlapseg.utils.io import atomic_path, sha256_file

log = logging.getLogger(__name__)

#: where the workflow keeps fetched weight files (relative to the workflow directory)
WEIGHTS_DIR = Path("resources/weights")
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# grey images replicated to 3 channels, trained from scratch: no ImageNet colour statistics
GREY_MEAN = [0.5, 0.5, 0.5]
GREY_STD = [0.25, 0.25, 0.25]


def input_normalisation(frozen_bn: bool) -> tuple[list[float], list[float]]:
    """(mean, std) of the detector transform: ImageNet's for pretrained backbones, else grey."""
    return (IMAGENET_MEAN, IMAGENET_STD) if frozen_bn else (GREY_MEAN, GREY_STD)


class FrozenBatchNorm2d(torchvision.ops.FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (fixed statistics and affine, BN state-dict layout)
    computed with BatchNorm's inference kernel, as Detectron2's does: the features are then
    bitwise those of torchvision's ResNet in eval mode (the scale-and-shift form differs in
    the last bits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


def freeze_stem(body: nn.Module) -> None:
    """No gradient for the ResNet stem and ``layer1`` of a pretrained backbone (FREEZE_AT=2)."""
    for name, p in body.named_parameters():
        if not name.startswith(("layer2.", "layer3.", "layer4.")):
            p.requires_grad_(False)


# ----------------------------------------------------------------------------- ImageNet files
def resnet_arch(depth: int) -> str:
    arch = f"resnet{int(depth)}"
    if arch not in RESNET_ARCHS:
        raise ValueError(f"no torchvision ImageNet weights for ResNet depth {depth} "
                         f"(one of {', '.join(a[6:] for a in RESNET_ARCHS)})")
    return arch


def imagenet_weights(arch: str):
    """torchvision's ``ResNet*_Weights.IMAGENET1K_V1`` (the weights torchvision's detectors use)."""
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(RESNET_ARCHS)})")
    return torchvision.models.get_model_weights(arch).IMAGENET1K_V1


def imagenet_weights_file(arch: str) -> str:
    """File name torchvision gives the weights, e.g. ``resnet50-0676ba61.pth`` (its hash prefix)."""
    return imagenet_weights(arch).url.rsplit("/", 1)[-1]


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_imagenet_weights(arch: str, weights_dir: str | Path = WEIGHTS_DIR) -> Path | None:
    """The weights file in ``weights_dir`` or the torch hub cache, or None (never downloads)."""
    name = imagenet_weights_file(arch)
    for folder in (Path(weights_dir), hub_checkpoint_dir()):
        if (folder / name).is_file():
            return folder / name
    return None


def check_hash_prefix(path: Path) -> None:
    """torch.hub's check: the sha256 of a downloaded file starts with the prefix in its name."""
    prefix = torch.hub.HASH_REGEX.search(path.name)
    if prefix and not sha256_file(path).startswith(prefix.group(1)):
        raise ValueError(f"{path}: sha256 does not start with {prefix.group(1)} as its name says "
                         "(wrong or truncated file); delete it and fetch it again")


def fetch_imagenet_weights(arch: str, out_dir: str | Path = WEIGHTS_DIR) -> Path:
    """``out_dir/<torchvision file name>``: already there, copied from the torch hub cache, or
    downloaded with hash check; offline and absent, a one-line error saying what to put where."""
    weights = imagenet_weights(arch)
    name = imagenet_weights_file(arch)
    out_dir = Path(out_dir)
    target = out_dir / name
    if target.is_file():
        check_hash_prefix(target)
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    cached = hub_checkpoint_dir() / name
    if cached.is_file():
        check_hash_prefix(cached)
        with atomic_path(target) as tmp:
            shutil.copyfile(cached, tmp)
        log.info("copied %s from the torch hub cache", name)
        return target
    try:  # torch.hub writes a temporary file next to the target and renames it when complete
        torch.hub.download_url_to_file(weights.url, str(target),
                                       hash_prefix=torch.hub.HASH_REGEX.search(name).group(1),
                                       progress=False)
    except RuntimeError as exc:  # hash mismatch
        raise ValueError(f"{weights.url}: downloaded file failed its hash check ({exc})") from None
    except OSError as exc:  # offline (URLError is an OSError), refused, ...
        reason = getattr(exc, "reason", None) or exc
        raise FileNotFoundError(
            errno.ENOENT, f"not found, and {weights.url} cannot be downloaded ({reason}); on a "
            f"machine with internet run `overlapseg weights fetch --arch {arch} --out DIR` (or save "
            f"torchvision's {type(weights).__name__}.IMAGENET1K_V1) and put {name} into {out_dir}/",
            str(target)) from None
    return target


# ----------------------------------------------------------------------------- loading
def read_state_dict(path: str | Path, what: str = "weights file") -> dict:
    """A state dict of tensors from ``path``; unreadable, truncated or not a mapping: one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: unreadable {what} (truncated or not a torch file: {first})") from None
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path}: not a state dict of named tensors")
    return state


def load_resnet_weights(body: nn.Module, path: str | Path, arch: str) -> int:
    """Copy a torchvision ResNet state dict into ``body`` (a ResNet or its layer getter).

    Every tensor of ``body`` must be in the file with its shape (the classifier ``fc`` in the
    file is not used); otherwise a one-line error names the file. Returns tensors loaded.
    """
    state = read_state_dict(path)
    own = body.state_dict()
    # FrozenBatchNorm2d has no num_batches_tracked; BatchNorm files do
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"{path}: not a torchvision {arch} state dict ({len(missing)} of its "
                         f"{len(needed)} backbone tensors missing, e.g. {missing[0]})")
    wrong = [k for k in needed if state[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{path}: not a torchvision {arch} state dict ({k} has shape "
                         f"{tuple(state[k].shape)}, {arch} needs {tuple(own[k].shape)})")
    body.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return len(needed)


def copy_matching(model: nn.Module, source: dict, prefixes: Iterable[str] = ("",),
                  aliases: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Warm start: copy every tensor of ``source`` whose name starts with one of ``prefixes``
    and that ``model`` has with the same shape. ``aliases`` ({own prefix: source prefix}) then
    fill this model's remaining tensors under an own prefix from the source tensor of the same
    name under the source prefix (e.g. a second detection stage started from the first).
    Returns (own names loaded, source names skipped)."""
    prefixes = tuple(prefixes)
    own = model.state_dict()
    state, skipped = {}, []
    for name, value in source.items():
        if not name.startswith(prefixes):
            continue
        if name in own and torch.is_tensor(value) and own[name].shape == value.shape:
            state[name] = value
        else:
            skipped.append(name)
    for own_prefix, source_prefix in (aliases or {}).items():
        for name in own:
            if name in state or not name.startswith(own_prefix) or not name.startswith(prefixes):
                continue
            value = source.get(source_prefix + name[len(own_prefix):])
            if torch.is_tensor(value) and value.shape == own[name].shape:
                state[name] = value
    model.load_state_dict(state, strict=False)
    return list(state), skipped

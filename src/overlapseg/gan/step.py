"""How a GAN update runs: mixed precision, gradient scaling, clipping and the loss check.

The Trainer base owns these policies (params ``amp``, ``grad_clip``; ``accumulate`` is the
number of micro-batches it hands over) but ``gan`` never imports ``train``, so a trainer passes
them to the one pix2pix update (:func:`overlapseg.gan.pix2pix.pix2pix_update`) and the one
CycleGAN update (:func:`overlapseg.gan.cyclegan.cyclegan_update`) as a :class:`StepOptions`.
The defaults (no autocast, no scaler, no clipping) are plain fp32 steps, bitwise repeatable on
CPU.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable, Sequence

import torch
from torch import nn


@dataclass
class StepOptions:
    """``autocast``: context factory the forward passes run in; ``scaler``: a
    ``torch.amp.GradScaler`` (fp16) or None; ``grad_clip``: max gradient norm per optimiser or
    None; ``check_finite(total, parts)``: raises on a non-finite loss before any step."""

    autocast: Callable[[], ContextManager] = nullcontext
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float | None = None
    check_finite: Callable[[torch.Tensor, dict], None] | None = None

    def backward(self, loss: torch.Tensor, inputs: Sequence[torch.Tensor] | None = None) -> None:
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        scaled.backward(inputs=list(inputs) if inputs is not None else None)

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> None:
        """Clip (after unscaling) and step one optimiser."""
        if self.grad_clip:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(list(params), float(self.grad_clip))
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def check(self, total: torch.Tensor, parts: dict) -> None:
        if self.check_finite is not None:
            self.check_finite(total, parts)


def set_requires_grad(nets: nn.Module | Sequence[nn.Module], flag: bool) -> None:
    for net in [nets] if isinstance(nets, nn.Module) else nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def mean_losses(sums: dict[str, torch.Tensor], losses: dict[str, torch.Tensor],
                n: int) -> dict[str, torch.Tensor]:
    """Running mean over ``n`` micro-batches of detached named losses."""
    return {k: sums.get(k, 0) + v.detach() / n for k, v in losses.items()}

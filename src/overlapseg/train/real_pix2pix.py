""""r + p2p" baseline of the coarse-to-fine paper's Table I (``004``), ``model: real_pix2pix``:
real mask layouts under a random affine + elastic warp, translated by pix2pix (the stage-3
network trained alone)."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from overlapseg.gan.layouts import RealLayouts, warp_masks
from overlapseg.train.base import register
from overlapseg.train.layout_generator import PIX2PIX_PARAMS, LayoutGenerator


@register("real_pix2pix")
class RealTransformPix2PixTrainer(LayoutGenerator):
    """pix2pix (instance rendering -> image, the stage-3 network) trained on the real pairs;
    synthesis renders real mask layouts of the train split under a random affine + elastic
    warp (:func:`~overlapseg.gan.layouts.warp_masks`; the image's cells warped alike when
    conditioning on cells) and translates them."""

    DEFAULTS: ClassVar[dict] = {
        **LayoutGenerator.DEFAULTS, **PIX2PIX_PARAMS,
        "transform": {"rotation": 180.0, "scale": [0.8, 1.2], "shear": 0.1, "translate": 0.1,
                      "elastic_alpha": 6.0, "elastic_grid": 4},
    }
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("discriminator_losses", "generator_losses")
    METHOD = "r+p2p"

    def build_model(self) -> nn.ModuleDict:
        return nn.ModuleDict({"pix2pix": self._pix2pix()})

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        return {"G": self._adam([model["pix2pix"]["G"]]), "D": self._adam([model["pix2pix"]["D"]])}

    def sample_batch(self, data: RealLayouts, rng: np.random.Generator):
        return self._p2p_batch(data, rng)

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        out = self.pix2pix_step(model["pix2pix"], list(micro_batches), optimizers, scaler, iteration)
        scaler.update()
        total = out.pop("total")
        return {**out, "loss": total}

    def generate(self, model, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        t, p = self.params["transform"], self.params
        shape, _, k = self._reference(real, rng)
        masks, cells = real.masks[k], None
        with_cells = self.conditions_on_cells(real)
        if len(masks):
            # one warp for the nuclei and the image's cells (min_pixels 0 keeps every mask in
            # order, so the two stacks split again); then the usual size filter
            stack = np.concatenate([masks, real.cells[k]]) if with_cells else masks
            warped = warp_masks(stack, rng, float(t["rotation"]), tuple(t["scale"]), float(t["shear"]),
                                float(t["translate"]), float(t["elastic_alpha"]), int(t["elastic_grid"]), 0)
            masks, cells = warped[:len(masks)], warped[len(masks):]
            masks = masks[masks.reshape(len(masks), -1).sum(1) >= int(p["min_pixels"])]
            cells = cells[cells.reshape(len(cells), -1).any(1)] if with_cells else None
        condition, cells = self.render(real, masks, shape, rng, cells)
        image = self.translate_image(model["pix2pix"]["G"], condition, torch_seed,
                                     bool(p["dropout_at_inference"]))[0]
        return {"masks": masks, "cells": cells, "source_image": real.names[k],
                "condition": condition, "image": image}

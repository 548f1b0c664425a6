""""p + CycleGAN" baseline of the coarse-to-fine paper's Table I (``004``, after Mahmood et al.
[4]), ``model: polygon_cyclegan``: random polygons of a parametric model (sizes, elongations and
counts drawn from the real instances) rendered as masks and translated to images by a CycleGAN
trained *unpaired* between rendered polygon layouts and real images - so nothing ties the image
to the mask exactly, the weakness the paper's Fig. 4 shows."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from overlapseg.gan.layouts import (CONDITION_CHANNELS, RealLayouts, pad_to, polygon_layout,
                                    random_flips)
from overlapseg.gan.pix2pix import to_network_range
from overlapseg.train.base import register
from overlapseg.train.layout_generator import CYCLE_PARAMS, LayoutGenerator


@register("polygon_cyclegan")
class PolygonCycleGANTrainer(LayoutGenerator):
    """Parametric polygon masks rendered like the stage-3 condition (with cells around them on
    cytology data), translated to images by a CycleGAN trained unpaired between rendered
    polygon layouts and real images (cycle MAE, no pixel-wise supervision, so image and mask
    may disagree - ``004`` Sec. II-C, Fig. 4)."""

    DEFAULTS: ClassVar[dict] = {
        **LayoutGenerator.DEFAULTS, **CYCLE_PARAMS,
        "n_vertices": [8, 14],   # polygon vertices (inclusive range)
        "jitter": 0.15,          # relative s.d. of the vertex radii
        "max_overlap": 0.0,      # area fraction a polygon may cover earlier ones (nuclei: 0)
    }
    SMOKE_PARAMS: ClassVar[dict] = {**LayoutGenerator.SMOKE_PARAMS, "pool_size": 1}
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("cycle_losses",)
    METHOD = "p+CycleGAN"

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        lo, hi = p["n_vertices"]
        if not 3 <= lo <= hi:
            raise ValueError(f"{cls.name} param n_vertices={p['n_vertices']!r}: need 3 <= lo <= hi")

    def build_model(self) -> nn.ModuleDict:
        nets = {"cyclegan": self._cyclegan(CONDITION_CHANNELS, 1)}
        if not self.for_inference:
            nets["pools"] = self._pool_modules({"a": CONDITION_CHANNELS, "b": 1})
        return nn.ModuleDict(nets)

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        nets = model["cyclegan"]
        return {"G": self._adam([nets["G_ab"], nets["G_ba"]]), "D": self._adam([nets["D_a"], nets["D_b"]])}

    def _layout(self, shape, n, real, rng) -> np.ndarray:
        p = self.params
        return polygon_layout(shape, n, real, rng, tuple(p["n_vertices"]), float(p["jitter"]),
                              float(p["max_overlap"]), min_pixels=int(p["min_pixels"]))

    def sample_batch(self, data: RealLayouts, rng: np.random.Generator):
        """Unpaired: a polygon layout with as many polygons as a random real window has
        instances, and a crop of another random real image."""
        p = self.params
        crop, a, b = int(p["crop_size"]), [], []
        for _ in range(int(p["batch_size"])):
            k = int(rng.integers(len(data)))
            win = data.window(k, crop, rng, anchored=False)
            masks = self._layout((crop, crop), data.count_in(k, win), data, rng)
            a.append(to_network_range(self.render(data, masks, (crop, crop), rng)[0]))
            k = int(rng.integers(len(data)))
            image = pad_to(data.images[k][data.window(k, crop, rng, anchored=False)][None], crop)
            if p["flips"]:
                (image,) = random_flips([image], rng)
            b.append(to_network_range(image))
        return torch.from_numpy(np.stack(a)), torch.from_numpy(np.stack(b))

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        pools = self._pools(model, ["a", "b"], iteration)
        out = self.cycle_step(model["cyclegan"], (pools["a"], pools["b"]) if "a" in pools else None,
                              list(micro_batches), 0.0, optimizers, scaler, iteration, "G", "D", "")
        scaler.update()
        total = out.pop("total")
        return {**out, "loss": total}

    def generate(self, model, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        shape, count, _ = self._reference(real, rng)
        masks = self._layout(shape, count, real, rng)
        condition, cells = self.render(real, masks, shape, rng)
        image = self.translate_image(model["cyclegan"]["G_ab"], condition)[0]
        return {"masks": masks, "cells": cells, "condition": condition, "image": image}

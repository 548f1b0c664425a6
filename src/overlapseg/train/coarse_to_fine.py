"""Coarse-to-fine data generator (Zhao et al., paper ``004`` Sec. II; issue 19), ``model:
coarse_to_fine``.

ONE trainer, three stages updated every iteration on their own batches: stage 1 (Sec. II-A) a
CycleGAN from the *point domain* (seed points of a spatial process) to the *box domain*
(one-layer Eq. 1 ovals, half the box size) learned from unpaired images; stage 2 (Sec. II-B)
a CycleGAN from box-sized coloured ovals to colour masks with a boundary class, fed the
*corresponding* (ovals, mask) pair of a real image and therefore with an extra paired L1 (MAE)
term; stage 3 (Sec. II-C) pix2pix from the instance rendering to the raw image (cGAN + L1).
Synthesis chains them: seed points -> stage 1 -> boxes (connected components) -> coloured
ovals -> stage 2 -> colour mask -> decoding + iterative k-terminal cut -> instances ->
rendering (with cells around the nuclei on cytology data) -> stage 3 -> image
(:meth:`CoarseToFineTrainer.generate`). The colour-mask domain of stage 2 holds one instance
per pixel, so overlapping (amodal) cells come out as touching, squeezed instances - the
paper's setting.

Building blocks (networks, updates, Eq. 1 rendering, decoding, layouts) are
:mod:`overlapseg.gan`; the shared generator parts :mod:`overlapseg.train.layout_generator`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from overlapseg.gan.coarse_to_fine import (COARSE_TO_FINE_DEFAULTS, SEED_PROCESSES,
                                           coarse_to_fine_masks, colour_mask_foreground,
                                           masks_from_labels, render_ovals,
                                           render_points, seed_points, stage2_pair)
from overlapseg.gan.layouts import RealLayouts, pad_to, random_flips
from overlapseg.gan.pix2pix import to_network_range
from overlapseg.train.base import DataRef, Trainer, iteration_torch_seed, register
from overlapseg.train.layout_generator import CYCLE_PARAMS, PIX2PIX_PARAMS, LayoutGenerator


@register("coarse_to_fine")
class CoarseToFineTrainer(LayoutGenerator):
    """The three-stage coarse-to-fine generator of ``004`` Sec. II, trained as one model.

    Every iteration updates stage 1 (CycleGAN point domain -> box domain of Eq. 1 ovals,
    unpaired; Sec. II-A), stage 2 (CycleGAN box-sized coloured ovals -> colour mask with a
    boundary class, on corresponding pairs with the paired MAE term ``c2f.stage2_paired_l1``;
    Sec. II-B) and stage 3 (pix2pix instance rendering -> image; Sec. II-C), each on its own
    crops of the real train split. Paper values: U-Net generators with tanh, PatchGAN
    discriminators, MAE in all stages (Sec. III), ``bv = 0.25``, ovals half the box size in
    stage 1 and the box size in stage 2 (``c2f`` dict, :data:`COARSE_TO_FINE_DEFAULTS`); the
    paper states no crop size, widths or iteration counts (defaults here: pix2pix/CycleGAN's).
    """

    DEFAULTS: ClassVar[dict] = {
        **LayoutGenerator.DEFAULTS, **CYCLE_PARAMS, **PIX2PIX_PARAMS,
        "c2f": copy.deepcopy(COARSE_TO_FINE_DEFAULTS),  # rendering / decoding / k-terminal cut
        "n_clusters": None,      # clustered seed points: parents (default n // 5)
        "cluster_std": None,     # and spread (default min(shape) / 20), px
        "min_box_pixels": 4,     # stage-1 components smaller than this (px) are specks, not boxes
    }
    SMOKE_PARAMS: ClassVar[dict] = {**LayoutGenerator.SMOKE_PARAMS, "pool_size": 1}
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("cycle_losses", "discriminator_losses",
                                               "generator_losses")
    METHOD = "coarse-to-fine"
    POOLS = {"stage1_a": 1, "stage1_b": 1, "stage2_a": 3, "stage2_b": 4}  # name -> channels

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        if p["c2f"]["process"] not in SEED_PROCESSES:
            raise ValueError(f"{cls.name} param c2f.process={p['c2f']['process']!r}: "
                             f"{' | '.join(SEED_PROCESSES)}")
        c2f = p["c2f"]
        if not isinstance(c2f["close_radius"], int) or c2f["close_radius"] < 0:
            raise ValueError(f"{cls.name} param c2f.close_radius={c2f['close_radius']!r}: integer >= 0")
        if not 0.0 <= float(c2f["min_extra_fraction"]) <= 1.0:
            raise ValueError(f"{cls.name} param c2f.min_extra_fraction={c2f['min_extra_fraction']!r}: in [0, 1]")
        if not isinstance(p["min_box_pixels"], int) or p["min_box_pixels"] < 0:
            raise ValueError(f"{cls.name} param min_box_pixels={p['min_box_pixels']!r}: integer >= 0")

    def build_model(self) -> nn.ModuleDict:
        nets = {"stage1": self._cyclegan(1, 1), "stage2": self._cyclegan(3, 4),
                "stage3": self._pix2pix()}
        if not self.for_inference:
            nets["pools"] = self._pool_modules(self.POOLS)
        return nn.ModuleDict(nets)

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        out = {}
        for stage in ("stage1", "stage2"):
            nets = model[stage]
            out[f"{stage}_G"] = self._adam([nets["G_ab"], nets["G_ba"]])
            out[f"{stage}_D"] = self._adam([nets["D_a"], nets["D_b"]])
        out["stage3_G"] = self._adam([model["stage3"]["G"]])
        out["stage3_D"] = self._adam([model["stage3"]["D"]])
        return out

    def load_data(self, refs: list[DataRef]) -> RealLayouts:
        """Real data plus each image's stage-1 box domain: the Eq. 1 ovals (half box size) of
        all its instances in one layer (``004`` Sec. II-A)."""
        data = super().load_data(refs)
        c2f = self.params["c2f"]
        data.box_images = [render_ovals(im.shape, *boxes, c2f["bv"], c2f["stage1_scale"])
                           for im, boxes in zip(data.images, data.boxes)]
        return data

    def sample_batch(self, data: RealLayouts, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Own crops per stage: stage 1 a point image with as many seed points as the real
        window has boxes, and the window's half-size ovals (unpaired positions); stage 2 the
        (coloured ovals, colour mask) pair of a real window; stage 3 a (rendering, image) pair."""
        p, c2f = self.params, self.params["c2f"]
        crop, flips = int(p["crop_size"]), bool(p["flips"])
        s1a, s1b, s2a, s2b = [], [], [], []
        for _ in range(int(p["batch_size"])):
            k = int(rng.integers(len(data)))
            win = data.window(k, crop, rng, anchored=True)
            boxes = data.box_images[k][win]
            points = render_points(seed_points((crop, crop), data.count_in(k, win), rng, c2f["process"],
                                               p["n_clusters"], p["cluster_std"]),
                                   (crop, crop), c2f["point_radius"])
            b = pad_to(boxes[None], crop, "constant")
            (b,) = random_flips([b], rng) if flips else (b,)
            s1a.append(to_network_range(points[None]))
            s1b.append(to_network_range(b))
            k = int(rng.integers(len(data)))
            win = data.window(k, crop, rng, anchored=True)
            ovals, mask = stage2_pair(data.labels[k][win], rng, c2f["n_colours"],
                                      c2f["boundary_width"], c2f["bv"], c2f["stage2_scale"])
            ovals, mask = pad_to(ovals, crop, "constant"), pad_to(mask, crop, "constant")
            if flips:
                ovals, mask = random_flips([ovals, mask], rng)
            s2a.append(to_network_range(ovals))
            s2b.append(to_network_range(mask))
        cond, image = self._p2p_batch(data, rng)
        t = lambda xs: torch.from_numpy(np.stack(xs))  # noqa: E731
        return {"s1_points": t(s1a), "s1_boxes": t(s1b), "s2_ovals": t(s2a), "s2_masks": t(s2b),
                "s3_cond": cond, "s3_image": image}

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        """Stage 1, stage 2, stage 3 updates on their own batches (one iteration)."""
        pools = self._pools(model, list(self.POOLS), iteration)
        get = lambda name: pools[name] if name in pools else None  # noqa: E731  (none at inference)
        out = self.cycle_step(model["stage1"], (get("stage1_a"), get("stage1_b")),
                              [(b["s1_points"], b["s1_boxes"]) for b in micro_batches], 0.0,
                              optimizers, scaler, iteration, "stage1_G", "stage1_D", "s1_")
        out |= self.cycle_step(model["stage2"], (get("stage2_a"), get("stage2_b")),
                               [(b["s2_ovals"], b["s2_masks"]) for b in micro_batches],
                               float(self.params["c2f"]["stage2_paired_l1"]),
                               optimizers, scaler, iteration, "stage2_G", "stage2_D", "s2_")
        out |= self.pix2pix_step(model["stage3"], [(b["s3_cond"], b["s3_image"]) for b in micro_batches],
                                 optimizers, scaler, iteration, "stage3_G", "stage3_D", "s3_")
        scaler.update()
        total = out.pop("s1_total") + out.pop("s2_total") + out.pop("s3_total")
        return {**out, "loss": total}

    # ---- synthesis ----------------------------------------------------------------------
    def generate(self, model, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        """Seed points (``c2f.process``, as many as a random real image has instances, at its
        size) -> stage 1 -> boxes (connected components; specks under ``min_box_pixels``
        ignored) -> coloured ovals -> stage 2 -> colour mask -> decoding and k-terminal cut ->
        instance masks -> rendering (cells drawn around the nuclei when conditioning on cells)
        -> stage 3 -> image (``004`` Fig. 1). Returns every intermediate (for the stage figure
        and the tests) besides ``masks`` and ``image``."""
        p, c2f = self.params, self.params["c2f"]
        shape, count, _ = self._reference(real, rng)
        points = seed_points(shape, count, rng, c2f["process"], p["n_clusters"], p["cluster_std"])
        point_image = render_points(points, shape, c2f["point_radius"])[None]
        seen: dict[str, np.ndarray] = {}

        def stage1(x):
            box = self.translate_image(model["stage1"]["G_ab"], x)
            components, _ = ndimage.label(box[0] > c2f["oval_threshold"])
            specks = np.bincount(components.ravel()) < int(p["min_box_pixels"])
            specks[0] = False
            box[0][specks[components]] = 0.0
            seen["box_image"] = box
            return box

        def stage2(x):
            seen["colour_boxes"] = x
            seen["mask_image"] = self.translate_image(model["stage2"]["G_ab"], x)
            return seen["mask_image"]

        labels, centres, sizes = coarse_to_fine_masks(point_image, stage1, stage2, rng, c2f)
        masks = masks_from_labels(labels)
        if len(masks):
            masks = masks[masks.reshape(len(masks), -1).sum(1) >= int(p["min_pixels"])]
        condition, cells = self.render(real, masks, shape, rng)
        image = self.translate_image(model["stage3"]["G"], condition, torch_seed,
                                     bool(p["dropout_at_inference"]))[0]
        _, _, foreground = colour_mask_foreground(seen["mask_image"], c2f["fg_threshold"],
                                                  c2f["boundary_threshold"], c2f["close_radius"])
        return {"points": points, "point_image": point_image, "centres": centres, "sizes": sizes,
                **seen, "foreground": foreground, "labels": labels, "masks": masks, "cells": cells,
                "condition": condition, "image": image}


def stages_figure(model_dir, data, names: Sequence[str], out_png, out_pdf, n: int = 3,
                  seed: int = 0, device: str = "cpu") -> None:
    """The stage figure (:func:`overlapseg.gan.report.c2f_stages_figure`) of the trained
    coarse-to-fine generator in ``model_dir``; examples are the first ``n`` images of the
    synthetic set written with the same ``seed`` (same per-image RNG)."""
    from overlapseg.gan.report import c2f_stages_figure

    trainer, model = Trainer.load(Path(model_dir), device)
    if not isinstance(trainer, CoarseToFineTrainer):
        raise ValueError(f"{model_dir}: not a coarse_to_fine generator (trainer {trainer.name!r})")
    real = RealLayouts([(Path(data), list(names))], trainer.params["category"], 1)
    examples = [trainer.generate(model, real, np.random.default_rng([seed, i]), iteration_torch_seed(seed, i))
                for i in range(n)]
    c2f_stages_figure(examples, out_png, out_pdf, trainer.params["category"],
                      trainer.params["c2f"]["boundary_threshold"],
                      f"coarse-to-fine generator {Path(model_dir).name}: stage outputs")

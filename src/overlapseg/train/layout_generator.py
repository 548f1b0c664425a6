"""Base of the generators that draw their own instance layouts (paper ``004``; issues 19, 28).

The coarse-to-fine generator (:mod:`overlapseg.train.coarse_to_fine`) and its Table I
baselines (:mod:`overlapseg.train.polygon_cyclegan`, :mod:`overlapseg.train.real_pix2pix`) are
each trained on the real train split and write a canonical dataset with exact masks that serves
as a training ``source``. They share :class:`LayoutGenerator`: category-specific real data
(:class:`~overlapseg.gan.layouts.RealLayouts`), the stage-3 pix2pix and CycleGAN parts (their
updates are the ones of :mod:`overlapseg.gan`, run with the Trainer's ``amp``, ``grad_clip``
and ``accumulate``), and :meth:`LayoutGenerator.synthesize_set`; a subclass implements
:meth:`LayoutGenerator.generate` (one synthetic sample from an RNG).

Instance category (param ``category``): the paper generates nuclei, so the default is
``nucleus``; ``cytoplasm`` generates cells. Only that category is generated and annotated, so
experiments on these sources should be read on that category (the ``c2f`` table preset reports
nuclei). On cytology data, where every nucleus sits in a cell, the image generator is
conditioned on cells as well (param ``condition_cells``, ``auto``: when the training data
annotates cytoplasm and the category is nucleus): in training on the real cells, at synthesis
on a cell per generated nucleus drawn from the real (cell, nucleus) pairs
(:func:`~overlapseg.gan.layouts.cells_around`), so the images show cells around the nuclei;
nuclei-only data keeps the paper's nuclei-only condition. Stage-3 training crops are anchored
on instances.

The generators' histories of fakes (CycleGAN's image pools) are buffers of the model, so
checkpoints carry them and a resumed run is bitwise the uninterrupted one; they are left out of
``model.pt``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.gan.cyclegan import (CYCLEGAN_DEFAULTS, GENERATORS, ImagePool, build_cyclegan,
                                     cyclegan_losses, cyclegan_update)
from overlapseg.gan.layouts import (CONDITION_CHANNELS, GENERATED_CATEGORIES, RealLayouts, cells_around,
                                    content_crop, render_category)
from overlapseg.gan.pix2pix import GAN_MODES, build_pix2pix, to_network_range
from overlapseg.train.base import DataRef, Trainer, iteration_torch_seed
from overlapseg.train.gan import GANTrainer

log = logging.getLogger(__name__)

CONDITION_CELLS = ("auto", True, False)

PIX2PIX_PARAMS = {
    "lambda_l1": 100.0,           # pix2pix L1 (MAE) weight (004 Sec. III: MAE in all stages)
    "gan_mode": "vanilla",        # pix2pix adversarial loss
    "dropout_at_inference": True,  # pix2pix noise source at synthesis
}
CYCLE_PARAMS = {
    "generator": "unet",          # 004 Sec. III: encoder-decoder with skips, tanh
    "cyclegan_norm": CYCLEGAN_DEFAULTS["norm"],
    "cyclegan_gan_mode": CYCLEGAN_DEFAULTS["gan_mode"],
    "lambda_cycle": CYCLEGAN_DEFAULTS["lambda_cycle"],
    "lambda_identity": 0.0,       # not in 004; points/ovals and masks/images differ in channels
    "pool_size": 50,              # CycleGAN's history of fakes (0: none)
}


def real_layouts(refs: list[DataRef], category: str) -> RealLayouts:
    return RealLayouts([(r.root, r.names) for r in refs], category, 1)


class LayoutGenerator(GANTrainer):
    """Base of the layout-drawing generators (not registered)."""

    DEFAULTS: ClassVar[dict] = {
        **Trainer.DEFAULTS,
        "iterations": 200, "batch_size": 1, "checkpoint_every": 100,
        "category": "nucleus",   # 004 generates nuclei; cytoplasm = cells (see module doc)
        "condition_cells": "auto",  # nuclei: condition the image on cells too (auto: if annotated)
        "crop_size": 256,        # training crop of every stage (sets the U-Net depth)
        "ngf": 64, "ndf": 64, "n_layers_d": 3,
        "lr": 2e-4, "betas": [0.5, 0.999],  # Adam as pix2pix / CycleGAN
        "flips": True,
        "boundary_width": 2,     # px, boundary class of the stage-3 instance rendering
        "min_pixels": 8,         # smaller generated instances are dropped
        "tile": None,            # synthesis tiles (default crop_size) and stride (tile / 2)
        "stride": None,
    }
    SMOKE_PARAMS: ClassVar[dict] = {"crop_size": 32, "ngf": 4, "ndf": 4, "n_layers_d": 2}
    INFERENCE_KEYS: ClassVar[tuple[str, ...]] = ("tile", "stride", "dropout_at_inference")
    #: the layouts come from the generator itself, not from the copy-paste module
    USES_COPYPASTE_LAYOUTS: ClassVar[bool] = False
    METHOD: ClassVar[str] = "generator"

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        if p["category"] not in GENERATED_CATEGORIES:
            raise ValueError(f"{cls.name} param category={p['category']!r}: "
                             f"{' | '.join(GENERATED_CATEGORIES)}")
        if p["condition_cells"] not in CONDITION_CELLS:
            raise ValueError(f"{cls.name} param condition_cells={p['condition_cells']!r}: "
                             "auto | true | false")
        if p["condition_cells"] is True and p["category"] != "nucleus":
            raise ValueError(f"{cls.name} param condition_cells=true needs category nucleus "
                             "(cells are drawn around the generated nuclei)")
        if "gan_mode" in p and p["gan_mode"] not in GAN_MODES:  # pix2pix-based generators
            raise ValueError(f"{cls.name} param gan_mode={p['gan_mode']!r}: {' | '.join(GAN_MODES)}")
        for key in ("crop_size", "ngf", "ndf", "boundary_width", "min_pixels"):
            if not isinstance(p[key], int) or p[key] < 1:
                raise ValueError(f"{cls.name} param {key}={p[key]!r}: must be a positive integer")
        if p["crop_size"] % 4:
            raise ValueError(f"{cls.name} param crop_size={p['crop_size']}: must be divisible by 4")
        if "generator" in p and p["generator"] not in GENERATORS:  # CycleGAN-based generators
            raise ValueError(f"{cls.name} param generator={p['generator']!r}: {' | '.join(GENERATORS)}")
        if "pool_size" in p and (not isinstance(p["pool_size"], int) or p["pool_size"] < 0):
            raise ValueError(f"{cls.name} param pool_size={p['pool_size']!r}: integer >= 0")

    # ---- real data and conditions --------------------------------------------------------
    def conditions_on_cells(self, real: RealLayouts) -> bool:
        """Whether the image generator sees cells around the nuclei (param ``condition_cells``;
        ``auto``: category nucleus on data that annotates cytoplasm)."""
        flag = self.params["condition_cells"]
        if flag == "auto":
            return self.params["category"] == "nucleus" and real.annotates_cells
        if flag and not real.annotates_cells:
            raise ValueError(f"{self.name} param condition_cells=true, but no nucleus of the training "
                             f"images {real.names[:3]}... lies in an annotated cell (cytoplasm)")
        return bool(flag)

    def render(self, real: RealLayouts, masks: np.ndarray, shape: tuple[int, int],
               rng: np.random.Generator | None = None,
               cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(stage-3 condition, cells)`` of a layout of ``masks``: with cells when the generator
        conditions on them (``cells`` given, else one drawn per nucleus with ``rng``)."""
        if self.conditions_on_cells(real):
            if cells is None:
                cells = cells_around(masks, real.templates, rng) if len(masks) else \
                    np.zeros((0,) + tuple(shape), bool)
        else:
            cells = None
        return render_category(masks, self.params["category"], int(self.params["boundary_width"]),
                               shape, cells), cells

    def load_data(self, refs: list[DataRef]) -> RealLayouts:
        """Real images, masks and their stage-3 renderings (whole images, so crop edges never
        look like instance boundaries), with the real cells when conditioning on them."""
        data = real_layouts(refs, self.params["category"])
        data.conditions = [self.render(data, m, im.shape, cells=data.cells[k] if data.cells else None)[0]
                           for k, (m, im) in enumerate(zip(data.masks, data.images))]
        return data

    # ---- stage-3 pix2pix parts ---------------------------------------------------------
    def _pix2pix(self) -> nn.ModuleDict:
        p = self.params
        G, D = build_pix2pix(CONDITION_CHANNELS, 1, crop_size=p["crop_size"], ngf=p["ngf"],
                             ndf=p["ndf"], n_layers_d=p["n_layers_d"],
                             dropout_at_inference=p["dropout_at_inference"])
        return nn.ModuleDict({"G": G, "D": D})

    def _p2p_batch(self, data: RealLayouts, rng: np.random.Generator):
        """(condition, image) crops of random real images, anchored on an instance, in
        network range."""
        crop, conds, targets = int(self.params["crop_size"]), [], []
        for _ in range(int(self.params["batch_size"])):
            c, t = content_crop(data, int(rng.integers(len(data))), crop, rng, bool(self.params["flips"]))
            conds.append(to_network_range(c))
            targets.append(to_network_range(t))
        return torch.from_numpy(np.stack(conds)), torch.from_numpy(np.stack(targets))

    # ---- CycleGAN parts (stages 1-2, p + CycleGAN) -----------------------------------------
    def _cyclegan(self, channels_a: int, channels_b: int) -> nn.ModuleDict:
        p = self.params
        return nn.ModuleDict(build_cyclegan(channels_a, channels_b, generator=p["generator"],
                                            crop_size=p["crop_size"], ngf=p["ngf"], ndf=p["ndf"],
                                            n_layers_d=p["n_layers_d"], norm=p["cyclegan_norm"]))

    def _pool_modules(self, specs: dict[str, int]) -> nn.ModuleDict:
        crop, size = int(self.params["crop_size"]), int(self.params["pool_size"])
        return nn.ModuleDict({name: ImagePool(size, c, crop) for name, c in specs.items()})

    def cycle_losses(self, nets, a, b, paired_l1, pool_a, pool_b) -> dict[str, torch.Tensor]:
        """CycleGAN generator and discriminator terms of one batch (``004`` Sec. II-A/B):
        adversarial (LSGAN) + ``lambda_cycle`` * cycle MAE [+ identity] [+ ``paired_l1`` *
        paired MAE for corresponding pairs]; ``G_*`` and ``D_*`` entries, totals included."""
        p = self.params
        return cyclegan_losses(nets["G_ab"], nets["G_ba"], nets["D_a"], nets["D_b"], a, b,
                               float(p["lambda_cycle"]), float(p["lambda_identity"]),
                               float(paired_l1), p["cyclegan_gan_mode"], pool_a, pool_b)

    def cycle_step(self, nets: nn.ModuleDict, pools: tuple | None, batches: list, paired_l1: float,
                   optimizers, scaler, iteration: int, key_g: str, key_d: str,
                   prefix: str) -> dict[str, torch.Tensor]:
        """:func:`~overlapseg.gan.cyclegan.cyclegan_update` on the micro-batches; logged as
        ``{prefix}G_gan_ab, G_gan_ba, G_cycle_a, G_cycle_b, D_a, D_b[, G_paired], total``."""
        sums = cyclegan_update(
            nets, optimizers[key_g], optimizers[key_d], batches,
            losses=lambda n_, a, b, pa, pb: self.cycle_losses(n_, a, b, paired_l1, pa, pb),
            pools=pools if pools is not None else (None, None),
            options=self.step_options(scaler, iteration, prefix))
        out = {f"{prefix}{k}": sums[k] for k in ("G_gan_ab", "G_gan_ba", "G_cycle_a", "G_cycle_b",
                                                  "D_a", "D_b")}
        if paired_l1 > 0:
            out[f"{prefix}G_paired"] = sums["G_paired"]
        out[f"{prefix}total"] = sums["G_total"] + sums["D_total"]
        return out

    def _pools(self, model, names: list[str], iteration: int) -> dict[str, ImagePool]:
        """The model's image pools, each given an RNG of (seed, iteration, pool) for its draws."""
        pools = model["pools"] if "pools" in model else {}
        for k, name in enumerate(names):
            if name in pools:
                pools[name].rng = np.random.default_rng([self.seed, iteration, 17, k])
        return pools

    def export(self, model: nn.Module) -> dict:
        """``model.pt`` without the training-only image pools."""
        state = super().export(model)
        state["state_dict"] = {k: v for k, v in state["state_dict"].items()
                               if not k.startswith("pools.")}
        return state

    # ---- synthesis ----------------------------------------------------------------------
    def generate(self, model: nn.Module, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        """One synthetic sample: ``{"masks": (N, H, W) bool, "image": (H, W) float [0, 1], ...}``
        plus the intermediate outputs of the generator's stages."""
        raise NotImplementedError

    def _reference(self, real: RealLayouts, rng: np.random.Generator) -> tuple[tuple[int, int], int, int]:
        """(shape, instance count, index) of a random real training image: the synthetic
        image's size and, for the layout, how many instances it holds."""
        k = int(rng.integers(len(real)))
        return real.images[k].shape, int(real.counts[k]), k

    def synthesize_set(self, model: nn.Module, data, names, out_dir, n: int, seed: int,
                       copypaste_params: dict | None = None, prefix: str | None = None,
                       info: dict | None = None) -> Path:
        """``n`` synthetic images as a canonical dataset in ``out_dir``, with exactly the
        instance masks each image was generated from (category ``category``). Image ``i``
        depends only on (seed, i) and the model. ``data``/``names``: the real train split,
        whose image sizes and instance statistics the layouts follow. ``copypaste_params`` is
        not used (these generators make their own layouts)."""
        if n < 1:
            raise ValueError(f"number of synthetic images must be >= 1, got {n}")
        real = RealLayouts([(Path(data), list(names) if names is not None else None)],
                           self.params["category"], 1)
        prefix = prefix or Path(out_dir).name
        category = self.params["category"]
        counts: list[int] = []

        def samples():
            for i in range(n):
                out = self.generate(model, real, np.random.default_rng([seed, i]),
                                    iteration_torch_seed(seed, i))
                counts.append(len(out["masks"]))
                yield Sample(f"{prefix}_{i:05d}", np.round(out["image"] * 255).astype(np.uint8),
                             [Instance(m, category) for m in out["masks"]],
                             source=f"{self.name} seed={seed} i={i}", subset="synth")

        meta = {"method": self.METHOD, "trainer": self.name, "category": category,
                "condition_cells": self.conditions_on_cells(real), "seed": seed,
                "n": n, "scale": real.scale, "params": {k: v for k, v in self.params.items()
                                                        if k not in self._RUN_KEYS},
                **(info or {})}
        # only ``category`` is annotated: the cells drawn around generated nuclei are not
        path = write_canonical_dataset(samples(), Path(out_dir), info=meta, annotated=[category])
        log.info("%s: %d images, %d %s instances (%d images without any)", self.name, n,
                 sum(counts), category, sum(c == 0 for c in counts))
        return path

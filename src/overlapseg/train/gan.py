"""GAN trainers: their base :class:`GANTrainer`, the pix2pix trainer (``gan.<name>.model:
pix2pix``) and synthesis of GAN-based training sets (:func:`gan_synthesize`).

pix2pix follows the brightfield thesis (``003``) Sec. 4.4.2 / 5.5-5.6 and the coarse-to-fine
paper (``004``) stage 3; networks, losses, the update and the tiled translation are
:mod:`overlapseg.gan.pix2pix`. Two conditionings:

* ``mask``: an instance rendering of the annotations (cytoplasm, nuclei, boundary class) ->
  the real image. Synthesis renders the masks of new copy-paste layouts and translates them.
* ``composite``: the copy-paste module's additive optical-density composite -> the real image.
  Training pairs come from the real images themselves: the image's OD inside its cells
  (:func:`~overlapseg.gan.pix2pix.additive_composite`; a real overlap already carries the
  summed densities, as a pasted one does); synthesis translates new composites
  (``synth.copypaste`` params, ``output: additive``).

Either way the synthetic images keep the exact instance masks of their layouts. The loop is the
base :class:`~overlapseg.train.base.Trainer`'s (seeding, resume, checkpoints, loss log); the
coarse-to-fine generator and its baselines (:mod:`overlapseg.train.layout_generator`) share
:class:`GANTrainer` with pix2pix.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from overlapseg.data.canonical import CanonicalDataset, Sample, write_canonical_dataset
from overlapseg.data.preprocess import to_float_gray
from overlapseg.gan.pix2pix import (CONDITIONS, PIX2PIX_DEFAULTS, additive_condition, build_pix2pix,
                                    condition_image, discriminator_loss, generator_loss,
                                    pix2pix_update, render_instance_condition, sample_paired_crops,
                                    to_network_range, translate_unit)
from overlapseg.gan.step import StepOptions
from overlapseg.train.base import DataRef, Trainer, iteration_torch_seed, register

log = logging.getLogger(__name__)


class GANTrainer(Trainer):
    """Base of every generator trainer (not registered). It hands the Trainer's ``amp``,
    ``grad_clip`` and ``accumulate`` (the micro-batches) to the one pix2pix update of
    :mod:`overlapseg.gan` (:meth:`pix2pix_step`), keeps the pix2pix loss hooks the contract
    tests patch, and translates at synthesis with the one tiled translation
    (:meth:`translate_image`, params ``tile``/``stride``). Adam at a constant learning rate,
    as pix2pix and CycleGAN."""

    PRODUCES_INSTANCES = False

    def lr_factor(self, iteration: int) -> float:
        return 1.0

    def _adam(self, modules: list[nn.Module]) -> torch.optim.Adam:
        params = [q for m in modules for q in m.parameters()]
        return torch.optim.Adam(params, lr=float(self.params["lr"]),
                                betas=tuple(float(b) for b in self.params["betas"]))

    def step_options(self, scaler, iteration: int, prefix: str = "") -> StepOptions:
        """The Trainer's mixed precision, gradient scaler, clipping and finite-loss check."""
        def check(total, parts):
            self.check_finite(total, iteration, {f"{prefix}{k}": v for k, v in parts.items()})
        return StepOptions(self.autocast, scaler, self.params["grad_clip"], check)

    def discriminator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        """pix2pix D: real vs detached fake."""
        return discriminator_loss(D, cond, fake, real, self.params["gan_mode"])

    def generator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        """pix2pix G: cGAN + lambda_l1 * MAE to the real image (``004`` Sec. II-C / III)."""
        return generator_loss(D, cond, fake, real, float(self.params["lambda_l1"]),
                              self.params["gan_mode"])

    def pix2pix_step(self, nets: nn.ModuleDict, batches: list, optimizers, scaler, iteration: int,
                     key_g: str = "G", key_d: str = "D", prefix: str = "") -> dict[str, torch.Tensor]:
        """:func:`~overlapseg.gan.pix2pix.pix2pix_update` of ``nets["G"]``/``nets["D"]`` on the
        micro-batches; logged as ``{prefix}G_gan, G_l1, D_real, D_fake, total``."""
        out = pix2pix_update(nets["G"], nets["D"], optimizers[key_g], optimizers[key_d], batches,
                             d_losses=self.discriminator_losses, g_losses=self.generator_losses,
                             options=self.step_options(scaler, iteration, prefix))
        return {**{f"{prefix}{k}": out[k] for k in ("G_gan", "G_l1", "D_real", "D_fake")},
                f"{prefix}total": out["G_total"] + out["D_total"]}

    def translate_image(self, G: nn.Module, image01: np.ndarray, seed: int | None = None,
                        dropout: bool | None = False) -> np.ndarray:
        """``G`` applied by overlapping tiles (``tile`` param, default ``crop_size``; ``stride``,
        default tile / 2) to a ``(C, H, W)`` [0, 1] array, as in training (batch statistics,
        dropout as ``dropout``); ``(C_out, H, W)`` in [0, 1]. ``seed`` seeds the dropout draws."""
        tile = int(self.params["tile"] or self.params["crop_size"])
        stride = int(self.params["stride"] or max(tile // 2, 1))
        return translate_unit(G, image01, tile, stride, seed, dropout)


class PairedImages:
    """(condition, target) pairs in network range [-1, 1], one per real training image."""

    def __init__(self, refs: list[DataRef], condition: str, boundary_width: int):
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for ref in refs:
            ds = CanonicalDataset(ref.root)
            for name in ref.names if ref.names is not None else ds.names:
                image = to_float_gray(ds.load_image(name))
                cond = condition_image(condition, image, ds.masks(name, "cytoplasm"),
                                       ds.masks(name, "nucleus"), boundary_width)
                self.pairs.append((to_network_range(cond), to_network_range(image[None])))
        if not self.pairs:
            raise ValueError(f"no training images in {[str(r.root) for r in refs]}")

    def __len__(self) -> int:
        return len(self.pairs)


@register("pix2pix")
class Pix2PixTrainer(GANTrainer):
    """Conditional GAN: U-Net generator, 70x70 PatchGAN, cGAN + lambda L1, Adam 2e-4 (0.5, 0.999)."""

    DEFAULTS = {**Trainer.DEFAULTS, **PIX2PIX_DEFAULTS, "betas": [0.5, 0.999],
                "condition": "mask", "iterations": 200, "batch_size": 1, "checkpoint_every": 100,
                "flips": True, "tile": None, "stride": None}
    SMOKE_PARAMS = {"crop_size": 32, "ngf": 4, "ndf": 4, "batch_size": 2}
    INFERENCE_KEYS = ("tile", "stride", "dropout_at_inference")
    USES_COPYPASTE_LAYOUTS = True  # synthesize_set translates copy-paste layouts
    LOSS_METHODS = ("discriminator_losses", "generator_losses")

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        if p["condition"] not in CONDITIONS:
            raise ValueError(f"pix2pix param condition={p['condition']!r}: {' | '.join(CONDITIONS)}")

    def _network_params(self) -> dict:
        return {k: self.params[k] for k in PIX2PIX_DEFAULTS if k not in ("lr", "betas", "lambda_l1",
                                                                          "gan_mode", "boundary_width")}

    def build_model(self) -> nn.ModuleDict:
        G, D = build_pix2pix(CONDITIONS[self.params["condition"]], 1, **self._network_params())
        return nn.ModuleDict({"G": G, "D": D})

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        return {"G": self._adam([model["G"]]), "D": self._adam([model["D"]])}

    def load_data(self, refs: list[DataRef]) -> PairedImages:
        return PairedImages(refs, self.params["condition"], int(self.params["boundary_width"]))

    def sample_batch(self, data: PairedImages, rng: np.random.Generator):
        conds, targets = [], []
        for _ in range(int(self.params["batch_size"])):
            cond, target = data.pairs[int(rng.integers(len(data)))]
            c, t = sample_paired_crops(cond, target, int(self.params["crop_size"]), 1, rng,
                                       flips=bool(self.params["flips"]))
            conds.append(c[0])
            targets.append(t[0])
        return torch.from_numpy(np.stack(conds)), torch.from_numpy(np.stack(targets))

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        """One pix2pix update (:meth:`GANTrainer.pix2pix_step`) over the micro-batches."""
        out = self.pix2pix_step(model, list(micro_batches), optimizers, scaler, iteration)
        scaler.update()
        total = out.pop("total")
        return {**out, "loss": total}

    # ---- synthesis ------------------------------------------------------------------------
    def synthesize(self, model, layouts: list[Sample], out_dir: Path, seed: int,
                   info: dict | None = None) -> Path:
        """Translate the conditions of ``layouts`` (samples with exact masks; for ``composite``
        their image is the additive composite) into a canonical dataset with the same masks."""
        condition = self.params["condition"]
        G = model["G"] if isinstance(model, nn.ModuleDict) else model

        def samples():
            for i, layout in enumerate(layouts):
                cells = np.stack([x.mask for x in layout.instances if x.category == "cytoplasm"])
                nuclei = [x.mask for x in layout.instances if x.category == "nucleus"]
                nuclei = np.stack(nuclei) if nuclei else np.zeros((0,) + cells.shape[1:], bool)
                if condition == "composite":
                    cond = additive_condition(layout.image)
                else:
                    cond = render_instance_condition(cells, nuclei, int(self.params["boundary_width"]))
                image = self.translate_image(G, cond, iteration_torch_seed(seed, i),
                                             bool(self.params["dropout_at_inference"]))[0]
                yield Sample(layout.name, np.round(image * 255).astype(np.uint8), layout.instances,
                             source=f"{self.name} condition={condition} layout={layout.source}",
                             subset="synth")
        return write_canonical_dataset(samples(), out_dir, info=info)

    def synthesize_set(self, model, data, names, out_dir, n: int, seed: int, copypaste_params: dict,
                       prefix: str | None = None, info: dict | None = None) -> Path:
        """``n`` synthetic images: new copy-paste layouts (from ``names`` of ``data``, the train
        split; ``copypaste_params`` as ``synth.copypaste``) translated by this generator."""
        from overlapseg.synth.copypaste import config_from_params, generate_copypaste, load_sources

        params = {**copypaste_params, "output": "additive" if self.params["condition"] == "composite"
                  else copypaste_params.get("output", "intensity")}
        cfg = config_from_params(params)
        sources = load_sources(data, names, cfg)
        layouts = list(generate_copypaste(sources, n, seed, cfg, prefix=prefix or Path(out_dir).name))
        info = {"method": f"pix2pix-{self.params['condition']}", **(info or {}),
                "seed": seed, "n": n, "copypaste": params}
        return self.synthesize(model, layouts, Path(out_dir), seed, info)


def gan_synthesize(model_dir, data, names, out_dir, n: int, seed: int, copypaste: dict,
                   device: str = "cpu", prefix: str | None = None) -> Path:
    """``n`` synthetic images of the generator in ``model_dir`` (trained on ``names`` of
    ``data``, the train split), masks kept exactly; each generator trainer's
    ``synthesize_set`` decides the layouts (pix2pix: copy-paste layouts from ``copypaste``
    params; coarse-to-fine and its baselines: their own, :mod:`overlapseg.train.layout_generator`).
    Image ``i`` depends only on (seed, i) and the model, not on ``n``: two generator entries
    that share one trained model and seed give nested sets (the first ``n`` images agree)."""
    trainer, model = Trainer.load(Path(model_dir), device)
    if trainer.PRODUCES_INSTANCES or not hasattr(trainer, "synthesize_set"):
        raise ValueError(f"{model_dir}: not a generator (trainer {trainer.name!r})")
    return trainer.synthesize_set(model, data, names, Path(out_dir), n, seed, copypaste,
                                  prefix=prefix, info={"generator": str(model_dir)})

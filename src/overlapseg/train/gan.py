"""pix2pix trainer (``gan.<name>.model: pix2pix``) and GAN-based synthetic training sets.

Brightfield thesis (``003``) Sec. 4.4.2 / 5.5-5.6 and the coarse-to-fine paper (``004``)
stage 3; networks and losses in :mod:`overlapseg.gan.pix2pix`. Two conditionings:

* ``mask``: an instance rendering of the annotations (cytoplasm, nuclei, boundary class) ->
  the real image. Synthesis renders the masks of new copy-paste layouts and translates them.
* ``composite``: the copy-paste module's additive optical-density composite -> the real image.
  Training pairs come from the real images themselves: each cell's optical density (Beer-
  Lambert, OD = -log(I / background)) is cut out with its mask and the cells are added back in
  place, so overlaps carry the summed densities of cut-out crops exactly as pasted composites
  do; the generator learns to turn such composites into realistic images. Synthesis translates
  new composites (``synth.copypaste`` params, ``output: additive``).

Either way the synthetic images keep the exact instance masks of their layouts. The loop is the
base :class:`~overlapseg.train.base.Trainer`'s (seeding, resume, checkpoints, loss log) with two
optimizers and a discriminator-then-generator step.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from overlapseg.data.canonical import CanonicalDataset, Sample, write_canonical_dataset
from overlapseg.data.preprocess import to_float_gray
from overlapseg.gan.pix2pix import (PIX2PIX_DEFAULTS, additive_condition, build_pix2pix,
                                    discriminator_loss, from_network_range, generator_loss,
                                    render_instance_condition, sample_paired_crops,
                                    set_requires_grad, to_network_range, translate)
from overlapseg.train.base import DataRef, Trainer, iteration_torch_seed, register

log = logging.getLogger(__name__)

CONDITIONS = {"mask": 3, "composite": 1}  # conditioning -> input channels


def additive_composite(image: np.ndarray, cells: np.ndarray, background: float | None = None) -> np.ndarray:
    """Additive optical-density composite of a real grey image's own cells, scaled to [0, 1].

    ``image`` float (H, W) in [0, 1]; ``cells`` bool (N, H, W). Each cell contributes the
    image's OD inside its mask, so a pixel covered by k cells carries k times its OD: what
    adding cut-out cells does (copy-paste ``output: additive`` scales OD the same way).
    """
    union = cells.any(axis=0) if len(cells) else np.zeros(image.shape, bool)
    if background is None:
        free = image[~union]
        background = float(np.percentile(free, 90)) if free.size else float(image.max())
    od = -np.log(np.clip(image, 1e-3, None) / max(background, 1e-3))
    od = np.clip(od, 0, None) * cells.sum(axis=0, dtype=np.int32)
    return (od / max(float(od.max()), 1e-6)).astype(np.float32)


def condition_image(condition: str, image: np.ndarray | None, cells: np.ndarray,
                    nuclei: np.ndarray, boundary_width: int) -> np.ndarray:
    """The generator input (C, H, W) in [0, 1] of one real image or layout."""
    if condition == "mask":
        return render_instance_condition(cells, nuclei, boundary_width)
    if condition == "composite":
        return additive_composite(image, cells)[None]
    raise ValueError(f"unknown pix2pix condition {condition!r} ({' | '.join(CONDITIONS)})")


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
class Pix2PixTrainer(Trainer):
    """Conditional GAN: U-Net generator, 70x70 PatchGAN, cGAN + lambda L1, Adam 2e-4 (0.5, 0.999)."""

    DEFAULTS = {**Trainer.DEFAULTS, **PIX2PIX_DEFAULTS, "betas": [0.5, 0.999],
                "condition": "mask", "iterations": 200, "batch_size": 1, "checkpoint_every": 100,
                "flips": True, "tile": None, "stride": None}
    SMOKE_PARAMS = {"crop_size": 32, "ngf": 4, "ndf": 4, "batch_size": 2}
    INFERENCE_KEYS = ("tile", "stride", "dropout_at_inference")
    PRODUCES_INSTANCES = False
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

    def build_model(self) -> torch.nn.ModuleDict:
        G, D = build_pix2pix(CONDITIONS[self.params["condition"]], 1, **self._network_params())
        return torch.nn.ModuleDict({"G": G, "D": D})

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        lr, betas = float(self.params["lr"]), tuple(float(b) for b in self.params["betas"])
        return {"G": torch.optim.Adam(model["G"].parameters(), lr=lr, betas=betas),
                "D": torch.optim.Adam(model["D"].parameters(), lr=lr, betas=betas)}

    def lr_factor(self, iteration: int) -> float:
        return 1.0

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

    def discriminator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        return discriminator_loss(D, cond, fake, real, self.params["gan_mode"])

    def generator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        return generator_loss(D, cond, fake, real, float(self.params["lambda_l1"]),
                              self.params["gan_mode"])

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        """Discriminator on real vs detached fake, then generator with the discriminator frozen."""
        G, D = model["G"], model["D"]
        p = self.params
        out: dict[str, torch.Tensor] = {}
        for cond, real in micro_batches:
            fake = G(cond)
            set_requires_grad(D, True)
            optimizers["D"].zero_grad(set_to_none=True)
            d = self.discriminator_losses(D, cond, fake, real)
            self.check_finite(d["total"], iteration, {f"D_{k}": v for k, v in d.items()})
            d["total"].backward()
            optimizers["D"].step()
            set_requires_grad(D, False)
            optimizers["G"].zero_grad(set_to_none=True)
            g = self.generator_losses(D, cond, fake, real)
            self.check_finite(g["total"], iteration, {f"G_{k}": v for k, v in g.items()})
            g["total"].backward()
            optimizers["G"].step()
            set_requires_grad(D, True)
            out = {"loss_G_gan": g["gan"].detach(), "loss_G_l1": g["l1"].detach(),
                   "loss_D_real": d["real"].detach(), "loss_D_fake": d["fake"].detach()}
        return {**out, "loss": g["total"].detach() + d["total"].detach()}

    # ---- synthesis ------------------------------------------------------------------------
    def translate_condition(self, model, cond: np.ndarray, seed: int) -> np.ndarray:
        """Grey float image (H, W) in [0, 1] for one condition (C, H, W) in [0, 1]."""
        G = model["G"] if isinstance(model, torch.nn.ModuleDict) else model
        G.set_inference_dropout(bool(self.params["dropout_at_inference"]))
        torch.manual_seed(seed)  # dropout is the generator's noise: draw it reproducibly
        tile = int(self.params["tile"] or self.params["crop_size"])
        stride = int(self.params["stride"] or tile // 2)
        with torch.no_grad():
            out = translate(G, to_network_range(cond), tile, stride)
        return from_network_range(out[0])

    def synthesize(self, model, layouts: list[Sample], out_dir: Path, seed: int,
                   info: dict | None = None) -> Path:
        """Translate the conditions of ``layouts`` (samples with exact masks; for ``composite``
        their image is the additive composite) into a canonical dataset with the same masks."""
        condition = self.params["condition"]

        def samples():
            for i, layout in enumerate(layouts):
                cells = np.stack([x.mask for x in layout.instances if x.category == "cytoplasm"])
                nuclei = [x.mask for x in layout.instances if x.category == "nucleus"]
                nuclei = np.stack(nuclei) if nuclei else np.zeros((0,) + cells.shape[1:], bool)
                if condition == "composite":
                    cond = additive_condition(layout.image)
                else:
                    cond = render_instance_condition(cells, nuclei, int(self.params["boundary_width"]))
                image = self.translate_condition(model, cond, iteration_torch_seed(seed, i))
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
    params; coarse-to-fine and its baselines: their own, :mod:`overlapseg.train.coarse_to_fine`)."""
    trainer, model = Trainer.load(Path(model_dir), device)
    if trainer.PRODUCES_INSTANCES or not hasattr(trainer, "synthesize_set"):
        raise ValueError(f"{model_dir}: not a generator (trainer {trainer.name!r})")
    return trainer.synthesize_set(model, data, names, Path(out_dir), n, seed, copypaste,
                                  prefix=prefix, info={"generator": str(model_dir)})

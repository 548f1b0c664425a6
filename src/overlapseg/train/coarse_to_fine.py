"""Coarse-to-fine data generator (Zhao et al., paper ``004``; issue 19) and its Table I baselines.

Three registered generator trainers (``gan.<name>.model``), each trained on the real train
split and each writing a canonical dataset with exact masks that serves as a training
``source``:

* ``coarse_to_fine`` (:class:`CoarseToFineTrainer`, the paper's method, Sec. II): ONE trainer,
  three stages updated every iteration on their own batches -
  stage 1 (Sec. II-A) a CycleGAN from the *point domain* (seed points of a spatial process) to
  the *box domain* (one-layer Eq. 1 ovals, half the box size) learned from unpaired images;
  stage 2 (Sec. II-B) a CycleGAN from box-sized coloured ovals to colour masks with a
  boundary class, fed the *corresponding* (ovals, mask) pair of a real image and therefore
  with an extra paired L1 (MAE) term; stage 3 (Sec. II-C) pix2pix from the instance rendering
  to the raw image (cGAN + L1). Synthesis chains them: seed points -> stage 1 -> boxes (connected
  components) -> coloured ovals -> stage 2 -> colour mask -> decoding + iterative k-terminal
  cut -> instances -> rendering -> stage 3 -> image (:meth:`CoarseToFineTrainer.generate`).
* ``polygon_cyclegan`` ("p + CycleGAN", Table I, after Mahmood et al. [4]): random polygons
  of a parametric model (sizes, elongations and counts drawn from the real instances)
  rendered as masks and translated to images by a CycleGAN trained *unpaired* between
  rendered polygon layouts and real images - so nothing ties the image to the mask exactly,
  the weakness the paper's Fig. 4 shows.
* ``real_pix2pix`` ("r + p2p", Table I): real mask layouts under a random affine + elastic
  warp, translated by pix2pix (the stage-3 network trained alone).

Instance category (param ``category``): the paper generates nuclei, so the default is
``nucleus``; ``cytoplasm`` generates cells. Only that category is generated and annotated
(the real image's other structures are texture the image generator learns to draw without
masks), so experiments on these sources should be read on that category (the ``c2f`` table
preset reports nuclei). The colour-mask domain of stage 2 holds one instance per pixel, so
overlapping (amodal) cells come out as touching, squeezed instances - the paper's setting.

Every stage uses the building blocks of :mod:`overlapseg.gan` (networks, CycleGAN losses,
pix2pix losses, Eq. 1 rendering, decoding); the loop is the base Trainer's (per-iteration
seeding, exact resume, checkpoints, loss log). The generators' histories of fakes (CycleGAN's
image pools) are buffers of the model, so checkpoints carry them and a resumed run is
bitwise the uninterrupted one; they are left out of ``model.pt``.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from overlapseg.data.canonical import CanonicalDataset, Instance, Sample, write_canonical_dataset
from overlapseg.data.preprocess import to_float_gray
from overlapseg.gan.coarse_to_fine import (COARSE_TO_FINE_DEFAULTS, SEED_PROCESSES,
                                           boxes_from_labels, coarse_to_fine_masks,
                                           labels_from_masks, masks_from_labels, render_ovals,
                                           render_points, seed_points, stage2_pair)
from overlapseg.gan.cyclegan import CYCLEGAN_DEFAULTS, GENERATORS, build_cyclegan, cyclegan_losses
from overlapseg.gan.pix2pix import (GAN_MODES, build_pix2pix, discriminator_loss,
                                    from_network_range, generator_loss, render_instance_condition,
                                    sample_paired_crops, set_requires_grad, to_network_range,
                                    translate)
from overlapseg.train.base import DataRef, Trainer, iteration_torch_seed, register

log = logging.getLogger(__name__)

GENERATED_CATEGORIES = ("nucleus", "cytoplasm")
CONDITION_CHANNELS = 3  # render_instance_condition: cytoplasm, nucleus, boundary


# ----------------------------------------------------------------------------- rendering
def render_category(masks: np.ndarray, category: str, boundary_width: int,
                    shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Stage-3 condition ``(3, H, W)`` in {0, 1} of instances of one ``category``
    (:func:`~overlapseg.gan.pix2pix.render_instance_condition` with the other category empty):
    the category's channel (cytoplasm or nucleus) plus the boundary class (``004`` Sec. II-C)."""
    masks = np.asarray(masks, bool)
    if masks.size == 0:
        masks = np.zeros((0,) + tuple(shape if shape is not None else masks.shape[1:]), bool)
    empty = np.zeros((0,) + masks.shape[1:], bool)
    if category == "nucleus":
        return render_instance_condition(empty, masks, boundary_width)
    if category == "cytoplasm":
        return render_instance_condition(masks, empty, boundary_width)
    raise ValueError(f"unknown category {category!r} ({' | '.join(GENERATED_CATEGORIES)})")


# ----------------------------------------------------------------------------- real data
def mask_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(centres, sizes)`` ``(N, 2)`` of each mask (middle pixel of the extent, extent in
    pixels), as :func:`~overlapseg.gan.coarse_to_fine.boxes_from_labels` but per (amodal) mask."""
    centres, sizes = [], []
    for m in np.asarray(masks, bool):
        c, s = boxes_from_labels(m.astype(np.int32))
        centres.append(c[0])
        sizes.append(s[0])
    return (np.asarray(centres, np.float64).reshape(-1, 2), np.asarray(sizes, np.float64).reshape(-1, 2))


class RealLayouts:
    """The real training images of one category, in memory: grey image in [0, 1], instance
    masks, label image (a later instance wins where masks overlap), box centres and the
    instance statistics the generators' layouts are drawn from (counts per image, equivalent
    radii, elongations). Boxes are those of the (amodal) masks."""

    def __init__(self, refs: list[DataRef], category: str, min_pixels: int = 1):
        self.category = category
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []  # (centres, sizes) per image
        self.names: list[str] = []
        self.conditions: list[np.ndarray] = []  # filled by the trainer's load_data
        self.box_images: list[np.ndarray] = []
        self.scale = 1.0
        for ref in refs:
            ds = CanonicalDataset(ref.root)
            self.scale = ds.scale
            for name in ref.names if ref.names is not None else ds.names:
                image = to_float_gray(ds.load_image(name)).astype(np.float32)
                masks = ds.masks(name, category)
                masks = masks[masks.reshape(len(masks), -1).sum(1) >= min_pixels] if len(masks) else \
                    np.zeros((0,) + image.shape, bool)
                labels = labels_from_masks(masks) if len(masks) else np.zeros(image.shape, np.int32)
                self.images.append(image)
                self.masks.append(masks)
                self.labels.append(labels)
                self.boxes.append(mask_boxes(masks))
                self.names.append(name)
        if not self.images:
            raise ValueError(f"no training images in {[str(r.root) for r in refs]}")
        if not any(len(m) for m in self.masks):
            raise ValueError(f"no {category} instances in the training images of "
                             f"{[str(r.root) for r in refs]}; choose param category")
        self.counts = np.asarray([len(m) for m in self.masks], np.int64)
        radii, elongations = [], []
        for masks in self.masks:
            for m in masks:
                ys, xs = np.nonzero(m)
                radii.append(np.sqrt(len(ys) / np.pi))
                if len(ys) > 2:
                    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) + 1e-6 * np.eye(2)
                    ev = np.sort(np.linalg.eigvalsh(cov))
                    elongations.append(float(np.sqrt(ev[1] / max(ev[0], 1e-6))))
                else:
                    elongations.append(1.0)
        self.radii = np.asarray(radii, np.float64)
        self.elongations = np.clip(np.asarray(elongations, np.float64), 1.0, 4.0)

    def __len__(self) -> int:
        return len(self.images)

    def window(self, k: int, crop: int, rng: np.random.Generator,
               anchored: bool) -> tuple[slice, slice]:
        """A ``crop`` window of image ``k`` (the whole padded image if smaller); ``anchored``:
        placed so that it contains the centre of a random instance (informative crops for the
        stage-1/2 domains; nuclei cover a small part of the image)."""
        h, w = self.images[k].shape
        centres = self.boxes[k][0]
        anchor = centres[int(rng.integers(len(centres)))] if anchored and len(centres) else None
        starts = []
        for axis, size in enumerate((h, w)):
            hi = max(size - crop, 0)
            if anchor is not None:  # start in [c - crop + 1, c] so the window holds the centre
                lo_c = int(np.clip(np.ceil(anchor[axis] - crop + 1), 0, hi))
                hi_c = int(np.clip(np.floor(anchor[axis]), 0, hi))
                starts.append(int(rng.integers(lo_c, hi_c + 1)))
            else:
                starts.append(int(rng.integers(hi + 1)))
        return slice(starts[0], starts[0] + crop), slice(starts[1], starts[1] + crop)

    def count_in(self, k: int, window: tuple[slice, slice]) -> int:
        """Instances of image ``k`` whose box centre lies inside ``window``."""
        c = self.boxes[k][0]
        if not len(c):
            return 0
        inside = ((c[:, 0] >= window[0].start) & (c[:, 0] < window[0].stop)
                  & (c[:, 1] >= window[1].start) & (c[:, 1] < window[1].stop))
        return int(inside.sum())


def _pad_to(x: np.ndarray, crop: int, mode: str = "symmetric") -> np.ndarray:
    """Pad the spatial axes of ``(C, H, W)`` up to ``crop`` (images smaller than a crop):
    mirrored for images, ``constant`` (0 = background) for point/box/mask domains."""
    pad = [(0, 0)] + [(0, max(crop - s, 0)) for s in x.shape[1:]]
    return np.pad(x, pad, mode=mode) if any(p[1] for p in pad) else x


def _random_flips(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips and transpose on each ``(C, H, W)`` array."""
    for axis in (1, 2):
        if rng.random() < 0.5:
            arrays = [np.flip(a, axis) for a in arrays]
    if rng.random() < 0.5:
        arrays = [a.transpose(0, 2, 1) for a in arrays]
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


# ----------------------------------------------------------------------------- image pool
class TensorImagePool(nn.Module):
    """CycleGAN's history of generated images (Shrivastava et al.; as
    :class:`overlapseg.gan.cyclegan.ImagePool`) kept in buffers: the base Trainer checkpoints
    the model's state, so a resumed run continues with the same history. The 1/2 swap draws
    come from a generator the caller seeds per iteration (no hidden RNG state)."""

    def __init__(self, size: int, channels: int, crop: int):
        super().__init__()
        self.size = int(size)
        self.register_buffer("images", torch.zeros(self.size, channels, crop, crop))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.rng: np.random.Generator | None = None

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        if self.rng is None:
            raise RuntimeError("TensorImagePool: set .rng for this iteration before query()")
        out = []
        for img in images:
            n = int(self.count)
            if n < self.size:
                self.images[n] = img
                self.count += 1
                out.append(img)
            elif self.rng.random() < 0.5:
                k = int(self.rng.integers(self.size))
                out.append(self.images[k].clone())
                self.images[k] = img
            else:
                out.append(img)
        return torch.stack(out)


# ----------------------------------------------------------------------------- shared base
class LayoutGenerator(Trainer):
    """Base of the generators here (not registered): category-specific real data, the
    stage-3 pix2pix parts, image translation, and :meth:`synthesize_set`. Subclasses
    implement :meth:`generate` (one synthetic sample from an RNG)."""

    DEFAULTS: ClassVar[dict] = {
        **Trainer.DEFAULTS,
        "iterations": 200, "batch_size": 1, "checkpoint_every": 100,
        "category": "nucleus",   # 004 generates nuclei; cytoplasm = cells (see module doc)
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
    PRODUCES_INSTANCES: ClassVar[bool] = False
    #: the layouts come from the generator itself, not from the copy-paste module
    USES_COPYPASTE_LAYOUTS: ClassVar[bool] = False
    METHOD: ClassVar[str] = "generator"

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        if p["category"] not in GENERATED_CATEGORIES:
            raise ValueError(f"{cls.name} param category={p['category']!r}: "
                             f"{' | '.join(GENERATED_CATEGORIES)}")
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

    # ---- stage-3 pix2pix parts ---------------------------------------------------------
    def _pix2pix(self) -> nn.ModuleDict:
        p = self.params
        G, D = build_pix2pix(CONDITION_CHANNELS, 1, crop_size=p["crop_size"], ngf=p["ngf"],
                             ndf=p["ndf"], n_layers_d=p["n_layers_d"],
                             dropout_at_inference=p["dropout_at_inference"])
        return nn.ModuleDict({"G": G, "D": D})

    def _adam(self, modules: list[nn.Module]) -> torch.optim.Adam:
        params = [q for m in modules for q in m.parameters()]
        return torch.optim.Adam(params, lr=float(self.params["lr"]),
                                betas=tuple(float(b) for b in self.params["betas"]))

    def lr_factor(self, iteration: int) -> float:
        return 1.0

    def load_data(self, refs: list[DataRef]) -> RealLayouts:
        """Real images, masks and their stage-3 renderings (whole images, so crop edges never
        look like instance boundaries)."""
        data = RealLayouts(refs, self.params["category"], 1)
        bw = int(self.params["boundary_width"])
        data.conditions = [render_category(m, data.category, bw, im.shape)
                           for m, im in zip(data.masks, data.images)]
        return data

    def p2p_discriminator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        """pix2pix D: real vs detached fake (``004`` Sec. II-C, stage 3)."""
        return discriminator_loss(D, cond, fake, real, self.params["gan_mode"])

    def p2p_generator_losses(self, D, cond, fake, real) -> dict[str, torch.Tensor]:
        """pix2pix G: cGAN + lambda_l1 * MAE to the real image (``004`` Sec. II-C / III)."""
        return generator_loss(D, cond, fake, real, float(self.params["lambda_l1"]),
                              self.params["gan_mode"])

    def _p2p_batch(self, data: RealLayouts, rng: np.random.Generator):
        """(condition, image) crops of random real images, in network range."""
        crop, conds, targets = int(self.params["crop_size"]), [], []
        for _ in range(int(self.params["batch_size"])):
            k = int(rng.integers(len(data)))
            c, t = sample_paired_crops(data.conditions[k], data.images[k][None], crop, 1, rng,
                                       flips=bool(self.params["flips"]))
            conds.append(to_network_range(c[0]))
            targets.append(to_network_range(t[0]))
        return torch.from_numpy(np.stack(conds)), torch.from_numpy(np.stack(targets))

    def _step(self, optimizers, scaler, keys: list[str], modules: list[nn.Module]) -> None:
        for key, module in zip(keys, modules):
            opt = optimizers[key]
            if self.params["grad_clip"]:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(module.parameters(), float(self.params["grad_clip"]))
            scaler.step(opt)

    def _pix2pix_update(self, nets: nn.ModuleDict, batches: list, optimizers, scaler, iteration: int,
                        key_g: str, key_d: str, prefix: str) -> dict[str, torch.Tensor]:
        """One pix2pix update over the micro-batches: D on real vs detached fakes, then G
        with D frozen (gradients of micro-batches accumulated)."""
        G, D = nets["G"], nets["D"]
        n = len(batches)
        with self.autocast():
            fakes = [G(cond) for cond, _ in batches]
        set_requires_grad(D, True)
        optimizers[key_d].zero_grad(set_to_none=True)
        d_sum: dict[str, torch.Tensor] = {}
        for (cond, real), fake in zip(batches, fakes):
            with self.autocast():
                d = {k: v.float() for k, v in self.p2p_discriminator_losses(D, cond, fake, real).items()}
            self.check_finite(d["total"], iteration, {f"{prefix}D_{k}": v for k, v in d.items()})
            scaler.scale(d["total"] / n).backward()
            d_sum = {k: d_sum.get(k, 0) + v.detach() / n for k, v in d.items()}
        self._step(optimizers, scaler, [key_d], [D])
        set_requires_grad(D, False)
        optimizers[key_g].zero_grad(set_to_none=True)
        g_sum: dict[str, torch.Tensor] = {}
        for (cond, real), fake in zip(batches, fakes):
            with self.autocast():
                g = {k: v.float() for k, v in self.p2p_generator_losses(D, cond, fake, real).items()}
            self.check_finite(g["total"], iteration, {f"{prefix}G_{k}": v for k, v in g.items()})
            scaler.scale(g["total"] / n).backward()
            g_sum = {k: g_sum.get(k, 0) + v.detach() / n for k, v in g.items()}
        self._step(optimizers, scaler, [key_g], [G])
        set_requires_grad(D, True)
        return {f"{prefix}G_gan": g_sum["gan"], f"{prefix}G_l1": g_sum["l1"],
                f"{prefix}D_real": d_sum["real"], f"{prefix}D_fake": d_sum["fake"],
                f"{prefix}total": g_sum["total"] + d_sum["total"]}

    # ---- CycleGAN parts (stages 1-2, p + CycleGAN) -----------------------------------------
    def _cyclegan(self, channels_a: int, channels_b: int) -> nn.ModuleDict:
        p = self.params
        return nn.ModuleDict(build_cyclegan(channels_a, channels_b, generator=p["generator"],
                                            crop_size=p["crop_size"], ngf=p["ngf"], ndf=p["ndf"],
                                            n_layers_d=p["n_layers_d"], norm=p["cyclegan_norm"]))

    def cycle_losses(self, nets, a, b, paired_l1, pool_a, pool_b) -> dict[str, torch.Tensor]:
        """CycleGAN generator and discriminator terms of one batch (``004`` Sec. II-A/B):
        adversarial (LSGAN) + ``lambda_cycle`` * cycle MAE [+ identity] [+ ``paired_l1`` *
        paired MAE for corresponding pairs]; ``G_*`` and ``D_*`` entries, totals included."""
        p = self.params
        gen, disc = cyclegan_losses(nets["G_ab"], nets["G_ba"], nets["D_a"], nets["D_b"], a, b,
                                    float(p["lambda_cycle"]), float(p["lambda_identity"]),
                                    float(paired_l1), p["cyclegan_gan_mode"], pool_a, pool_b)
        return {**{f"G_{k}": v for k, v in gen.items()},
                "D_total": disc["total"], "D_a": disc["D_a"], "D_b": disc["D_b"]}

    def _cycle_update(self, nets: nn.ModuleDict, pools: tuple | None, batches: list, paired_l1: float,
                      optimizers, scaler, iteration: int, key_g: str, key_d: str,
                      prefix: str) -> dict[str, torch.Tensor]:
        """One CycleGAN update (generators and discriminators from the same forward pass, as
        :func:`overlapseg.gan.cyclegan.cyclegan_step`); each total is back-propagated into its
        own networks only, so micro-batches accumulate cleanly."""
        gens = [nets["G_ab"], nets["G_ba"]]
        discs = [nets["D_a"], nets["D_b"]]
        g_params = [q for m in gens for q in m.parameters()]
        d_params = [q for m in discs for q in m.parameters()]
        optimizers[key_g].zero_grad(set_to_none=True)
        optimizers[key_d].zero_grad(set_to_none=True)
        n, sums = len(batches), {}
        pool_a, pool_b = pools if pools is not None else (None, None)
        for a, b in batches:
            with self.autocast():
                losses = {k: v.float() for k, v in
                          self.cycle_losses(nets, a, b, paired_l1, pool_a, pool_b).items()}
            self.check_finite(losses["G_total"] + losses["D_total"], iteration,
                              {f"{prefix}{k}": v for k, v in losses.items()})
            scaler.scale(losses["G_total"] / n).backward(inputs=g_params)
            scaler.scale(losses["D_total"] / n).backward(inputs=d_params)
            sums = {k: sums.get(k, 0) + v.detach() / n for k, v in losses.items()}
        self._step(optimizers, scaler, [key_g, key_d], [nn.ModuleList(gens), nn.ModuleList(discs)])
        out = {f"{prefix}{k}": sums[k] for k in ("G_gan_ab", "G_gan_ba", "G_cycle_a", "G_cycle_b",
                                                  "D_a", "D_b")}
        if paired_l1 > 0:
            out[f"{prefix}G_paired"] = sums["G_paired"]
        out[f"{prefix}total"] = sums["G_total"] + sums["D_total"]
        return out

    def _pools(self, model, names: list[str], iteration: int) -> dict[str, TensorImagePool]:
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
    def translate_image(self, G: nn.Module, image01: np.ndarray, seed: int | None = None,
                        dropout: bool = False) -> np.ndarray:
        """``G`` applied by overlapping tiles (tile/stride params) to a ``(C, H, W)`` [0, 1]
        array; returns ``(C_out, H, W)`` in [0, 1]. ``seed`` seeds torch for dropout draws."""
        if hasattr(G, "set_inference_dropout"):
            G.set_inference_dropout(bool(dropout))
        if seed is not None:
            torch.manual_seed(seed)
        tile = int(self.params["tile"] or self.params["crop_size"])
        stride = int(self.params["stride"] or max(tile // 2, 1))
        with torch.no_grad():
            out = translate(G, to_network_range(image01), tile, stride)
        return from_network_range(out)

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
        real = RealLayouts([DataRef(Path(data), list(names) if names is not None else None)],
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

        meta = {"method": self.METHOD, "trainer": self.name, "category": category, "seed": seed,
                "n": n, "scale": real.scale, "params": {k: v for k, v in self.params.items()
                                                        if k not in self._RUN_KEYS},
                **(info or {})}
        path = write_canonical_dataset(samples(), Path(out_dir), info=meta)
        log.info("%s: %d images, %d %s instances (%d images without any)", self.name, n,
                 sum(counts), category, sum(c == 0 for c in counts))
        return path


# ----------------------------------------------------------------------------- the method
_PIX2PIX_DEFAULTS = {
    "lambda_l1": 100.0,           # pix2pix L1 (MAE) weight (004 Sec. III: MAE in all stages)
    "gan_mode": "vanilla",        # pix2pix adversarial loss
    "dropout_at_inference": True,  # pix2pix noise source at synthesis
}
_CYCLE_DEFAULTS = {
    "generator": "unet",          # 004 Sec. III: encoder-decoder with skips, tanh
    "cyclegan_norm": CYCLEGAN_DEFAULTS["norm"],
    "cyclegan_gan_mode": CYCLEGAN_DEFAULTS["gan_mode"],
    "lambda_cycle": CYCLEGAN_DEFAULTS["lambda_cycle"],
    "lambda_identity": 0.0,       # not in 004; points/ovals and masks/images differ in channels
    "pool_size": 50,              # CycleGAN's history of fakes (0: none)
}


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
        **LayoutGenerator.DEFAULTS, **_CYCLE_DEFAULTS, **_PIX2PIX_DEFAULTS,
        "c2f": copy.deepcopy(COARSE_TO_FINE_DEFAULTS),  # rendering / decoding / k-terminal cut
        "n_clusters": None,      # clustered seed points: parents (default n // 5)
        "cluster_std": None,     # and spread (default min(shape) / 20), px
        "min_box_pixels": 4,     # stage-1 components smaller than this (px) are specks, not boxes
    }
    SMOKE_PARAMS: ClassVar[dict] = {**LayoutGenerator.SMOKE_PARAMS, "pool_size": 1}
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("cycle_losses", "p2p_discriminator_losses",
                                               "p2p_generator_losses")
    METHOD = "coarse-to-fine"
    POOLS = ("stage1_a", "stage1_b", "stage2_a", "stage2_b")

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        if p["c2f"]["process"] not in SEED_PROCESSES:
            raise ValueError(f"{cls.name} param c2f.process={p['c2f']['process']!r}: "
                             f"{' | '.join(SEED_PROCESSES)}")
        if not isinstance(p["min_box_pixels"], int) or p["min_box_pixels"] < 0:
            raise ValueError(f"{cls.name} param min_box_pixels={p['min_box_pixels']!r}: integer >= 0")

    def build_model(self) -> nn.ModuleDict:
        nets = {"stage1": self._cyclegan(1, 1), "stage2": self._cyclegan(3, 4),
                "stage3": self._pix2pix()}
        if not self.for_inference:
            crop, size = int(self.params["crop_size"]), int(self.params["pool_size"])
            nets["pools"] = nn.ModuleDict({name: TensorImagePool(size, c, crop) for name, c in
                                           zip(self.POOLS, (1, 1, 3, 4))})
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
            b = _pad_to(boxes[None], crop, "constant")
            (b,) = _random_flips([b], rng) if flips else (b,)
            s1a.append(to_network_range(points[None]))
            s1b.append(to_network_range(b))
            k = int(rng.integers(len(data)))
            win = data.window(k, crop, rng, anchored=True)
            ovals, mask = stage2_pair(data.labels[k][win], rng, c2f["n_colours"],
                                      c2f["boundary_width"], c2f["bv"], c2f["stage2_scale"])
            ovals, mask = _pad_to(ovals, crop, "constant"), _pad_to(mask, crop, "constant")
            if flips:
                ovals, mask = _random_flips([ovals, mask], rng)
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
        out = self._cycle_update(model["stage1"], (get("stage1_a"), get("stage1_b")),
                                 [(b["s1_points"], b["s1_boxes"]) for b in micro_batches], 0.0,
                                 optimizers, scaler, iteration, "stage1_G", "stage1_D", "s1_")
        out |= self._cycle_update(model["stage2"], (get("stage2_a"), get("stage2_b")),
                                  [(b["s2_ovals"], b["s2_masks"]) for b in micro_batches],
                                  float(self.params["c2f"]["stage2_paired_l1"]),
                                  optimizers, scaler, iteration, "stage2_G", "stage2_D", "s2_")
        out |= self._pix2pix_update(model["stage3"], [(b["s3_cond"], b["s3_image"]) for b in micro_batches],
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
        instance masks -> rendering -> stage 3 -> image (``004`` Fig. 1). Returns every
        intermediate (for the stage figure and the tests) besides ``masks`` and ``image``."""
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
        condition = render_category(masks, p["category"], int(p["boundary_width"]), shape)
        image = self.translate_image(model["stage3"]["G"], condition, torch_seed,
                                     bool(p["dropout_at_inference"]))[0]
        colour = seen["mask_image"]
        foreground = (colour[:3].max(axis=0) > c2f["fg_threshold"]) | (colour[3] > c2f["boundary_threshold"])
        return {"points": points, "point_image": point_image, "centres": centres, "sizes": sizes,
                **seen, "foreground": foreground, "labels": labels, "masks": masks,
                "condition": condition, "image": image}


# ----------------------------------------------------------------------------- p + CycleGAN
def random_polygon(shape: tuple[int, int], centre: np.ndarray, radius: float, elongation: float,
                   rng: np.random.Generator, n_vertices: tuple[int, int] = (8, 14),
                   jitter: float = 0.15) -> np.ndarray:
    """Filled random polygon (bool mask): vertices at sorted random angles on an ellipse of
    equivalent radius ``radius`` and axis ratio ``elongation`` (random orientation), each
    radius perturbed by ``jitter`` (relative s.d.) - a parametric nucleus/cell shape model as
    used by the "p + CycleGAN" baseline [4] of ``004`` Table I."""
    k = int(rng.integers(n_vertices[0], n_vertices[1] + 1))
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, k))
    a, b = radius * np.sqrt(elongation), radius / np.sqrt(elongation)
    r = np.clip(1.0 + rng.normal(0.0, jitter, k), 0.5, 1.5)
    theta = rng.uniform(0.0, np.pi)
    x, y = a * r * np.cos(angles), b * r * np.sin(angles)
    xr = centre[1] + x * np.cos(theta) - y * np.sin(theta)
    yr = centre[0] + x * np.sin(theta) + y * np.cos(theta)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.stack([xr, yr], 1) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def polygon_layout(shape: tuple[int, int], n: int, real: RealLayouts, rng: np.random.Generator,
                   n_vertices=(8, 14), jitter: float = 0.15, max_overlap: float = 0.0,
                   max_tries: int = 20, min_pixels: int = 8) -> np.ndarray:
    """``n`` random polygons (sizes/elongations drawn from the real instances), uniform
    positions, each accepted when at most ``max_overlap`` of its area covers earlier ones."""
    masks: list[np.ndarray] = []
    union = np.zeros(shape, bool)
    for _ in range(n):
        for _ in range(max_tries):
            centre = rng.uniform(0.0, 1.0, 2) * (np.asarray(shape) - 1)
            radius = float(real.radii[int(rng.integers(len(real.radii)))])
            elong = float(real.elongations[int(rng.integers(len(real.elongations)))])
            m = random_polygon(shape, centre, radius, elong, rng, n_vertices, jitter)
            area = int(m.sum())
            if area >= min_pixels and (m & union).sum() <= max_overlap * area:
                masks.append(m)
                union |= m
                break
    return np.stack(masks) if masks else np.zeros((0,) + tuple(shape), bool)


@register("polygon_cyclegan")
class PolygonCycleGANTrainer(LayoutGenerator):
    """"p + CycleGAN" of ``004`` Table I (after Mahmood et al. [4]): parametric polygon masks
    rendered like the stage-3 condition, translated to images by a CycleGAN trained unpaired
    between rendered polygon layouts and real images (cycle MAE, no pixel-wise supervision, so
    image and mask may disagree - Sec. II-C, Fig. 4)."""

    DEFAULTS: ClassVar[dict] = {
        **LayoutGenerator.DEFAULTS, **_CYCLE_DEFAULTS,
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
            crop, size = int(self.params["crop_size"]), int(self.params["pool_size"])
            nets["pools"] = nn.ModuleDict({"a": TensorImagePool(size, CONDITION_CHANNELS, crop),
                                           "b": TensorImagePool(size, 1, crop)})
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
        crop, bw, a, b = int(p["crop_size"]), int(p["boundary_width"]), [], []
        for _ in range(int(p["batch_size"])):
            k = int(rng.integers(len(data)))
            win = data.window(k, crop, rng, anchored=False)
            masks = self._layout((crop, crop), data.count_in(k, win), data, rng)
            a.append(to_network_range(render_category(masks, data.category, bw, (crop, crop))))
            k = int(rng.integers(len(data)))
            image = _pad_to(data.images[k][data.window(k, crop, rng, anchored=False)][None], crop)
            if p["flips"]:
                (image,) = _random_flips([image], rng)
            b.append(to_network_range(image))
        return torch.from_numpy(np.stack(a)), torch.from_numpy(np.stack(b))

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        pools = self._pools(model, ["a", "b"], iteration)
        out = self._cycle_update(model["cyclegan"], (pools["a"], pools["b"]) if "a" in pools else None,
                                 list(micro_batches), 0.0, optimizers, scaler, iteration, "G", "D", "")
        scaler.update()
        total = out.pop("total")
        return {**out, "loss": total}

    def generate(self, model, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        shape, count, _ = self._reference(real, rng)
        masks = self._layout(shape, count, real, rng)
        condition = render_category(masks, self.params["category"], int(self.params["boundary_width"]), shape)
        image = self.translate_image(model["cyclegan"]["G_ab"], condition)[0]
        return {"masks": masks, "condition": condition, "image": image}


# ----------------------------------------------------------------------------- r + p2p
def warp_masks(masks: np.ndarray, rng: np.random.Generator, rotation: float = 180.0,
               scale=(0.8, 1.2), shear: float = 0.1, translate_frac: float = 0.1,
               elastic_alpha: float = 6.0, elastic_grid: int = 4,
               min_pixels: int = 8) -> np.ndarray:
    """Real instance masks ``(N, H, W)`` under one random affine map (rotation about the image
    centre up to ``rotation`` degrees, isotropic ``scale``, ``shear``, translation up to
    ``translate_frac`` of the size) and one smooth elastic displacement field (a
    ``elastic_grid``^2 Gaussian grid of s.d. ``elastic_alpha`` px, cubic-upsampled); each mask
    warped on its own, so overlaps are kept; masks left with < ``min_pixels`` dropped."""
    masks = np.asarray(masks, bool)
    h, w = masks.shape[1:]
    angle = rng.uniform(-rotation, rotation)
    s = rng.uniform(*scale)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, s)
    matrix = np.vstack([matrix, [0, 0, 1]])
    sh = np.array([[1, rng.uniform(-shear, shear), 0], [0, 1, 0], [0, 0, 1]])
    shift = np.array([[1, 0, rng.uniform(-translate_frac, translate_frac) * w],
                      [0, 1, rng.uniform(-translate_frac, translate_frac) * h], [0, 0, 1]])
    inverse = np.linalg.inv(shift @ matrix @ sh)
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    if elastic_alpha > 0:
        coarse = rng.normal(0.0, elastic_alpha, (2, elastic_grid, elastic_grid)).astype(np.float32)
        xs = xs + cv2.resize(coarse[0], (w, h), interpolation=cv2.INTER_CUBIC)
        ys = ys + cv2.resize(coarse[1], (w, h), interpolation=cv2.INTER_CUBIC)
    map_x = (inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]).astype(np.float32)
    out = [cv2.remap(m.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool) for m in masks]
    out = [m for m in out if m.sum() >= min_pixels]
    return np.stack(out) if out else np.zeros((0, h, w), bool)


@register("real_pix2pix")
class RealTransformPix2PixTrainer(LayoutGenerator):
    """"r + p2p" of ``004`` Table I: pix2pix (instance rendering -> image, the stage-3
    network) trained on the real pairs; synthesis renders real mask layouts of the train split
    under a random affine + elastic warp (:func:`warp_masks`) and translates them."""

    DEFAULTS: ClassVar[dict] = {
        **LayoutGenerator.DEFAULTS, **_PIX2PIX_DEFAULTS,
        "transform": {"rotation": 180.0, "scale": [0.8, 1.2], "shear": 0.1, "translate": 0.1,
                      "elastic_alpha": 6.0, "elastic_grid": 4},
    }
    LOSS_METHODS: ClassVar[tuple[str, ...]] = ("p2p_discriminator_losses", "p2p_generator_losses")
    METHOD = "r+p2p"

    def build_model(self) -> nn.ModuleDict:
        return nn.ModuleDict({"pix2pix": self._pix2pix()})

    def configure_optimizers(self, model) -> dict[str, torch.optim.Optimizer]:
        return {"G": self._adam([model["pix2pix"]["G"]]), "D": self._adam([model["pix2pix"]["D"]])}

    def sample_batch(self, data: RealLayouts, rng: np.random.Generator):
        return self._p2p_batch(data, rng)

    def training_step(self, model, micro_batches, optimizers, scaler, iteration: int):
        out = self._pix2pix_update(model["pix2pix"], list(micro_batches), optimizers, scaler,
                                   iteration, "G", "D", "")
        scaler.update()
        total = out.pop("total")
        return {**out, "loss": total}

    def generate(self, model, real: RealLayouts, rng: np.random.Generator,
                 torch_seed: int) -> dict[str, Any]:
        t, p = self.params["transform"], self.params
        shape, _, k = self._reference(real, rng)
        masks = real.masks[k]
        masks = warp_masks(masks, rng, float(t["rotation"]), tuple(t["scale"]), float(t["shear"]),
                           float(t["translate"]), float(t["elastic_alpha"]), int(t["elastic_grid"]),
                           int(p["min_pixels"])) if len(masks) else masks
        condition = render_category(masks, p["category"], int(p["boundary_width"]), shape)
        image = self.translate_image(model["pix2pix"]["G"], condition, torch_seed,
                                     bool(p["dropout_at_inference"]))[0]
        return {"masks": masks, "source_image": real.names[k], "condition": condition, "image": image}

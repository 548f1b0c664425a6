"""SparseSEU-Net trainer (``model: sparse_seunet``): box-free instances from activation maps.

Brightfield thesis (``003``) Sec. 4.5; network, matching and losses in
:mod:`overlapseg.models.sparse_seunet`. Subclasses the SEU-Net trainer (same crops, flips,
elastic deformation and dropout holes, same overlap-map inputs) with instance targets instead
of semantic planes; ``accumulate`` micro-batches per optimiser step as in the thesis.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from overlapseg.data.canonical import CATEGORY_IDS, CanonicalDataset, DataError
from overlapseg.data.preprocess import to_float_gray
from overlapseg.models.scale import resample
from overlapseg.models.scope import SCOPE_KEY, scope_tensor
from overlapseg.models.sparse_seunet import (SPARSE_DEFAULTS, build_sparse_seunet,
                                             check_sparse_params, predict_instances, sparse_losses)
from overlapseg.train.base import DataRef, register
from overlapseg.train.maskrcnn import instance_outputs
from overlapseg.train.seunet import SEUNET_DEFAULTS, SEUNetTrainer, _load_map, augment, random_crop_at


class InstanceStacks:
    """Per image: a float32 stack (image, one plane per instance [, overlap map]) and labels."""

    def __init__(self, refs: list[DataRef], map_variant: str | None, input_scale: float = 1.0):
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        self.scopes: list[tuple[str, ...]] = []  # categories each item's source annotates
        self.with_map = map_variant is not None
        self.source_sizes: list[int] = []  # items per source, in order (inputs.mix)
        for ref in refs:
            before = len(self.items)
            ds = CanonicalDataset(ref.root)
            scope = ref.scope(ds)
            for name in ref.names if ref.names is not None else ds.names:
                if name not in ds.images:
                    raise DataError(ds.annotation_file, f"image {name!r} (from the split) not in dataset")
                image = to_float_gray(ds.load_image(name))
                planes, labels = [image[None]], []
                for category, cid in CATEGORY_IDS.items():
                    masks = ds.masks(name, category)
                    planes.append(masks.astype(np.float32))
                    labels += [cid] * len(masks)
                if self.with_map:
                    if ref.maps is not None:
                        prob = _load_map(ref, name, image.shape)
                    else:
                        from overlapseg.maps.overlap_maps import image_maps
                        prob = image_maps(ds, name, map_variant)["prob"].astype(np.float32)
                    planes.append(prob[None])
                stack = np.concatenate(planes).astype(np.float32)
                if input_scale != 1.0:  # the network's pixel scale (masks re-binarised)
                    stack = resample_stack(stack, input_scale, n_masks=len(labels))
                self.items.append((stack, np.asarray(labels, np.int64)))
                self.scopes.append(scope)
            self.source_sizes.append(len(self.items) - before)
        if not self.items:
            raise ValueError(f"no training images in {[str(r.root) for r in refs]}")

    def __len__(self) -> int:
        return len(self.items)


def resample_stack(stack: np.ndarray, factor: float, n_masks: int) -> np.ndarray:
    """(image, ``n_masks`` instance planes[, map]) resampled by ``factor``; the instance planes
    are binarised again (>= 0.5), an instance may vanish (all zero; dropped per batch)."""
    planes = [resample(plane, factor) for plane in stack]
    for k in range(1, 1 + n_masks):
        planes[k] = (planes[k] >= 0.5).astype(np.float32)
    return np.stack(planes).astype(np.float32)


@register("sparse_seunet")
class SparseSEUNetTrainer(SEUNetTrainer):
    DEFAULTS = {**copy.deepcopy(SEUNET_DEFAULTS), **SPARSE_DEFAULTS}
    SMOKE_PARAMS = {"base_channels": 4, "depth": 2, "crop": 32, "batch_size": 2, "accumulate": 2,
                    "n_instances": 8, "inst_dim": 8, "mask_dim": 8, "branch_convs": 1,
                    "lr": 1e-3, "tile": 48, "stride": 24}
    INFERENCE_KEYS = ("tile", "stride", "mask_threshold", "score_threshold")
    SEMANTIC_FROM_INSTANCES = True

    @classmethod
    def validate_params(cls, p: dict) -> None:
        super().validate_params(p)
        check_sparse_params(p)

    def check_inputs(self, inputs) -> None:
        if inputs is not None and inputs.map_variant is not None and not self.params["attention_map"]:
            raise ValueError("inputs.maps is read only by the attention-map variant "
                             "(params: overlap_head: true, attention_map: true)")
        if inputs is not None and self.params["attention_map"] and inputs.map_variant is None:
            raise ValueError("attention_map needs an overlap-probability map (inputs: {maps: v4})")
        super(SEUNetTrainer, self).check_inputs(inputs)

    @property
    def semantic_params(self) -> dict:
        return {**self.params, "semantic_score": 0.5}

    def build_model(self):
        return build_sparse_seunet(self.params)

    def load_data(self, refs: list[DataRef]) -> InstanceStacks:
        return InstanceStacks(refs, self.inputs.map_variant if self.inputs else None,
                              float(self.params["input_scale"]))

    def wants_validation(self) -> bool:
        return False

    def on_data_loaded(self, model, data) -> None:
        """No output-bias priors: the instance head starts at its own focal prior."""

    def sample_batch(self, data: InstanceStacks, rng: np.random.Generator):
        """Crops with their instance targets, overlap maps and (y, x) origins in their images
        (the coordinate features measure position from the image origin)."""
        crop = int(self.params["crop"])
        images, targets, maps, origins = [], [], [], []
        for _ in range(int(self.params["batch_size"])):
            index = self.draw(data, rng)
            stack, labels = data.items[index]
            n = len(labels)
            window, origin = random_crop_at(stack, crop, rng)
            origins.append(origin)
            out = augment(window, n, rng, self.params["augment"])
            masks = out[1:1 + n] > 0.5
            keep = masks.reshape(n, -1).any(axis=1)
            images.append(torch.from_numpy(out[:1].copy()))
            targets.append({"masks": torch.from_numpy(masks[keep]),
                            "labels": torch.from_numpy(labels[keep]),
                            SCOPE_KEY: scope_tensor(data.scopes[index])})
            if data.with_map:
                maps.append(torch.from_numpy(out[1 + n].copy()))
        return (torch.stack(images), targets, (torch.stack(maps) if maps else None),
                torch.tensor(origins, dtype=torch.float32))

    def losses(self, model, batch) -> dict[str, torch.Tensor]:
        x, targets, prob_map, origin = batch
        return sparse_losses(model(x, origin=origin), targets, self.params, prob_map=prob_map)

    def predict_image(self, model, image: np.ndarray, image_id: int):
        found = predict_instances(model, image, self.params)
        h, w = image.shape
        masks = np.stack([m for m, _, _ in found]) if found else np.zeros((0, h, w), bool)
        scores = np.asarray([s for _, s, _ in found], np.float64)
        labels = np.asarray([c for _, _, c in found], np.int64)
        return instance_outputs(masks, scores, labels, image_id, self.semantic_params)

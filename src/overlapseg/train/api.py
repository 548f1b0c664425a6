"""One entry point for training and inference of every model type.

Each model type is a module (``TRAINERS``) exposing::

    train(train_sets: list[DataRef], val_set: DataRef | None, out_dir: Path,
          params: dict, seed: int, device: str) -> Path          # writes out_dir/model.pt
    predict(model_dir: Path, data: DataRef, out_json: Path, semantic_dir: Path,
            params: dict, device: str) -> None

``predict`` writes COCO results (RLE + score, category ids 1 cytoplasm / 2 nucleus) for the
images of ``data`` and one ``{name}.npz`` per image in ``semantic_dir`` with binary uint8
arrays named after ``overlapseg.data.semantic.SEMANTIC_CLASSES`` that the model predicts
(instance models derive them from their instances).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

TRAINERS: dict[str, str] = {
    "maskrcnn": "overlapseg.train.maskrcnn",
    "seunet": "overlapseg.train.seunet",
}


@dataclass
class DataRef:
    """A canonical dataset directory, optionally restricted to some images, with maps."""

    root: Path
    names: list[str] | None = None  # None: all images
    maps: Path | None = None  # directory of {name}.npz overlap-probability maps, if used


def trainer(model: str):
    if model not in TRAINERS:
        raise ValueError(f"unknown model type {model!r}; known: {', '.join(TRAINERS)}")
    return importlib.import_module(TRAINERS[model])


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _read_splits(path) -> dict[str, list[str]]:
    from overlapseg.utils.io import read_json

    splits = read_json(path)
    for key in ("train", "val", "test"):
        if key not in splits:
            raise KeyError(f"{path}: splits file lacks the {key!r} list")
    return splits


def train_experiment(model: str, data, splits, out_model, params: dict, seed: int,
                     device: str = "auto", synthetic=None, with_original: bool = False,
                     maps=None, synthetic_maps=None) -> Path:
    """Train on the original train split, or on a synthetic set (optionally plus the original).

    Validation always uses the original val split, so models trained on synthetic data are
    selected on real images. ``maps``/``synthetic_maps``: precomputed overlap-probability maps.
    """
    split = _read_splits(splits)
    original = DataRef(Path(data), split["train"], Path(maps) if maps else None)
    train_sets = [original] if synthetic is None or with_original else []
    if synthetic is not None:
        train_sets.append(DataRef(Path(synthetic), None, Path(synthetic_maps) if synthetic_maps else None))
    val = DataRef(Path(data), split["val"]) if split["val"] else None
    out_dir = Path(out_model).parent
    return trainer(model).train(train_sets, val, out_dir, params, seed, resolve_device(device))


def predict_split(model: str, model_file, data, splits, split: str, out_json, semantic_dir,
                  params: dict, device: str = "auto") -> None:
    names = _read_splits(splits)[split]
    trainer(model).predict(Path(model_file).parent, DataRef(Path(data), names), Path(out_json),
                           Path(semantic_dir), params, resolve_device(device))

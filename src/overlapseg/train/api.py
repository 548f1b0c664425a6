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

"""One entry point for training and inference of every registered trainer.

Trainers are classes registered by name (``overlapseg.train.base.TRAINERS``); this module
turns file paths (what the Snakemake rules and the CLI have) into one :class:`TrainInputs`
object and calls the trainer.

``predict`` writes COCO results (RLE + score, category ids 1 cytoplasm / 2 nucleus) for the
images of a split and one ``{name}.npz`` per image with binary uint8 arrays named after
``overlapseg.data.semantic.SEMANTIC_CLASSES`` that the model predicts (instance models derive
them from their instances).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from overlapseg.train.base import (TRAINERS, DataRef, TrainInputs, get_trainer,  # noqa: F401
                                   load_trainers)

ORIGINAL = "original"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def read_splits(path) -> dict[str, list[str]]:
    from overlapseg.utils.io import read_json

    splits = read_json(path)
    for key in ("train", "val", "test"):
        if key not in splits:
            raise KeyError(f"{path}: splits file lacks the {key!r} list")
    return splits


def build_inputs(data, splits, sources: Sequence[str] = (ORIGINAL,),
                 source_dirs: Sequence | None = None, map_variant: str | None = None,
                 maps: Sequence | None = None, mix: Sequence[float] | None = None,
                 teacher=None, pool: str = "all", pool_options: dict | None = None,
                 init_file=None) -> TrainInputs:
    """The training inputs of one experiment.

    ``sources``: names of the training sources in order (``original`` = the train split of
    ``data``; any other name is a synthetic dataset whose directory is the matching entry of
    ``source_dirs``). ``maps``: per source, a directory of precomputed ``map_variant`` maps (or
    None: computed on the fly). Validation always uses the original val split, so models
    trained on synthetic data are selected on real images. ``pool``: which real training images
    ``original`` contributes: ``all``, or only the ``discrete`` (isolated cells) or ``aggregated``
    (clustered) ones, classified as CCCE classifies its donors (``pool_options``:
    ``max_cells_discrete``, ``max_overlap_ratio``; CC framework Tables 1-2 rows).
    ``init_file``: the file the ``init`` param needs (ImageNet weights, a ResNet state dict,
    or the warm-start source's ``model.pt``). Each source's annotation scope (the categories
    it annotates, ``DataRef.annotated``) comes from its dataset's ``info.annotated``.
    """
    split = read_splits(splits)
    train_names = list(split["train"])
    if pool != "all":
        from overlapseg.data.canonical import CanonicalDataset
        from overlapseg.synth.sources import select_pool

        opts = {k: v for k, v in (pool_options or {}).items()
                if k in ("max_cells_discrete", "max_overlap_ratio")}
        train_names = select_pool(CanonicalDataset(Path(data)), train_names, pool, **opts)
        if not train_names:
            raise ValueError(f"{splits}: no {pool} images in the train split (pool options {opts})")
    sources = list(sources)
    synthetic = [s for s in sources if s != ORIGINAL]
    source_dirs = list(source_dirs or [])
    if len(source_dirs) != len(synthetic):
        raise ValueError(f"{len(synthetic)} synthetic sources {synthetic} but {len(source_dirs)} directories")
    maps = list(maps) if maps is not None else [None] * len(sources)
    if len(maps) != len(sources):
        raise ValueError(f"{len(maps)} map directories for {len(sources)} sources")
    dirs = iter(source_dirs)
    refs = []
    for source, map_dir in zip(sources, maps):
        map_path = Path(map_dir) if map_dir else None
        if source == ORIGINAL:
            ref = DataRef(Path(data), train_names, map_path, ORIGINAL)
        else:
            ref = DataRef(Path(next(dirs)), None, map_path, source)
        ref.annotated = ref.scope()  # the categories its annotations.json declares, read once
        refs.append(ref)
    val = DataRef(Path(data), split["val"]) if split["val"] else None
    return TrainInputs(refs, val, list(mix) if mix is not None else None, map_variant,
                       Path(teacher) if teacher else None, pool,
                       Path(init_file) if init_file else None)


def train_experiment(model: str, out_model, params: dict, seed: int, inputs: TrainInputs,
                     device: str = "auto") -> Path:
    """Train the registered trainer ``model``; writes ``out_model`` (``.../model.pt``)."""
    trainer = get_trainer(model)(params, seed, resolve_device(device), inputs)
    return trainer.train(Path(out_model).parent)


def predict_split(model: str, model_file, data, splits, split: str, out_json, semantic_dir,
                  params: dict, device: str = "auto") -> None:
    """COCO results + semantic maps of one split with the model in ``model_file``'s folder."""
    names = read_splits(splits)[split]
    predict_data(Path(model_file).parent, DataRef(Path(data), names), out_json, semantic_dir,
                 params, device, expected=model)


def predict_splits(model: str, model_file, data, splits, outputs: dict, params: dict,
                   device: str = "auto") -> None:
    """``predict_split`` for several splits with one loaded model: ``outputs`` maps a split
    name to its (COCO results JSON, semantic folder)."""
    from overlapseg.train.base import Trainer  # noqa: F401 - the registry

    names = read_splits(splits)
    trainer, net = get_trainer(model).load(Path(model_file).parent, resolve_device(device), params)
    for split, (out_json, semantic_dir) in outputs.items():
        trainer.predict(net, DataRef(Path(data), names[split]), Path(out_json), Path(semantic_dir))


def predict_data(model_dir, data: DataRef, out_json, semantic_dir, params: dict | None = None,
                 device: str = "auto", expected: str | None = None) -> None:
    """Predict the images of ``data`` with the model stored in ``model_dir`` (any trainer).

    ``params`` may override the trainer's inference keys (thresholds, tiles); ``expected``
    names the trainer the caller expects, so a mixed-up model folder is an error.
    """
    from overlapseg.train.base import Trainer

    klass = get_trainer(expected) if expected else Trainer
    trainer, net = klass.load(Path(model_dir), resolve_device(device), params)
    trainer.predict(net, data, Path(out_json), Path(semantic_dir))

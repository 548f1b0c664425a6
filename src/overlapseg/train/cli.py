"""Training and inference subcommands (same functions as the train/predict rules)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _params(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: params file not found") from None
    if not isinstance(params, dict):
        raise ValueError(f"{path}: params file must hold a mapping")
    return params


def cmd_train(args) -> None:
    from overlapseg.train.api import ORIGINAL, build_inputs, train_experiment

    sources = [name for name, _ in args.source]
    if args.with_original or not sources:
        sources.insert(0, ORIGINAL)
    maps = None
    if args.maps:
        if len(args.maps) != len(sources):
            raise ValueError(f"--maps given {len(args.maps)} times for {len(sources)} sources "
                             f"({', '.join(sources)}): one directory per source, in that order")
        maps = args.maps
    inputs = build_inputs(args.data, args.splits, sources, [d for _, d in args.source],
                          args.map_variant, maps, args.mix, args.teacher)
    train_experiment(args.model, args.out / "model.pt", _params(args.params), args.seed, inputs,
                     args.device)


def cmd_predict(args) -> None:
    from overlapseg.train.api import predict_split

    predict_split(args.model, args.model_dir / "model.pt", args.data, args.splits, args.split,
                  args.out, args.semantic, _params(args.params), args.device)


def _source(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--source {text!r}: use NAME=DIR (e.g. ccce=results/demo/synth/ccce)")
    return name, Path(path)



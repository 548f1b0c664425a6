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
    from overlapseg.train.api import train_experiment

    train_experiment(args.model, args.data, args.splits, args.out / "model.pt", _params(args.params),
                     args.seed, args.device, synthetic=args.synthetic, with_original=args.with_original,
                     maps=args.maps, synthetic_maps=args.synthetic_maps)


def cmd_predict(args) -> None:
    from overlapseg.train.api import predict_split

    predict_split(args.model, args.model_dir / "model.pt", args.data, args.splits, args.split,
                  args.out, args.semantic, _params(args.params), args.device)


def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.train.api import TRAINERS

    p = sub.add_parser("train", help="train a model on a canonical dataset's train split")
    p.add_argument("--model", required=True, choices=sorted(TRAINERS))
    p.add_argument("--data", required=True, type=Path, help="canonical dataset directory")
    p.add_argument("--splits", required=True, type=Path, help="splits.json")
    p.add_argument("--out", required=True, type=Path, help="model directory (model.pt, log.csv, checkpoints/)")
    p.add_argument("--params", type=Path, help="YAML file of model/training params")
    p.add_argument("--synthetic", type=Path, help="train on this synthetic canonical dataset instead")
    p.add_argument("--with-original", action="store_true", help="with --synthetic: add the original train split")
    p.add_argument("--maps", type=Path, help="overlap-probability maps of --data (overlapseg maps)")
    p.add_argument("--synthetic-maps", type=Path, help="overlap-probability maps of --synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="COCO results + semantic maps for one split")
    p.add_argument("--model", required=True, choices=sorted(TRAINERS))
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--splits", required=True, type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, type=Path, help="predictions JSON (COCO results)")
    p.add_argument("--semantic", required=True, type=Path, help="directory for per-image semantic .npz")
    p.add_argument("--params", type=Path, help="YAML file of inference params (thresholds)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

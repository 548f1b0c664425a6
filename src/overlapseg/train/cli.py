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
                          args.map_variant, maps, args.mix, args.teacher, args.pool,
                          init_file=args.init_file)
    train_experiment(args.model, args.out / "model.pt", _params(args.params), args.seed, inputs,
                     args.device)


def cmd_predict(args) -> None:
    from overlapseg.train.api import predict_split
    from overlapseg.train.base import get_trainer

    params = _params(args.params)
    get_trainer(args.model).check_inference_params(params, str(args.params))
    predict_split(args.model, args.model_dir / "model.pt", args.data, args.splits, args.split,
                  args.out, args.semantic, params, args.device)


def cmd_cc_levels(args) -> None:
    import json

    from overlapseg.train.api import read_splits
    from overlapseg.train.ccnet import keypoint_level_summary

    summary = keypoint_level_summary(args.model_dir, args.data, read_splits(args.splits)[args.split])
    for cls, groups in summary.items():
        for group in ("corner", "centre"):
            g = groups.get(group, {})
            print(f"{cls:9s} {group:6s} keypoints {g.get('n', 0):4d}  median heatmap peak "
                  f"{g.get('peak') or 0:.3f}  median vote {g.get('vote') or 0:.3f}")
        print(f"{cls:9s} background: median over images of the largest heatmap value beyond "
              f"twice the disc radius from every keypoint {groups['background']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


def _source(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--source {text!r}: use NAME=DIR (e.g. ccce=results/demo/synth/ccce)")
    return name, Path(path)




def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.maps.overlap_maps import VARIANTS
    from overlapseg.train.base import load_trainers

    trainers = sorted(load_trainers())
    p = sub.add_parser("train", help="train a model on a canonical dataset's train split")
    p.add_argument("--model", required=True, choices=trainers)
    p.add_argument("--data", required=True, type=Path, help="canonical dataset directory")
    p.add_argument("--splits", required=True, type=Path, help="splits.json")
    p.add_argument("--out", required=True, type=Path, help="model directory (model.pt, log.csv, checkpoints/)")
    p.add_argument("--params", type=Path, help="YAML file of model/training params")
    p.add_argument("--source", type=_source, action="append", default=[], metavar="NAME=DIR",
                   help="train on this synthetic canonical dataset instead (repeatable)")
    p.add_argument("--with-original", action="store_true", help="with --source: add the original train split")
    p.add_argument("--mix", type=float, nargs="+", help="sampling weight per source, in order")
    p.add_argument("--map-variant", choices=VARIANTS,
                   help="overlap-probability map variant for map-guided losses")
    p.add_argument("--maps", type=Path, action="append",
                   help="precomputed maps of each source, in order (default: computed on the fly)")
    p.add_argument("--teacher", type=Path, help="model.pt of a teacher, for trainers that distil")
    p.add_argument("--pool", choices=["all", "discrete", "aggregated"], default="all",
                   help="real training images kept: all, only discrete (isolated cells) or aggregated ones")
    p.add_argument("--init-file", type=Path, metavar="PATH",
                   help="file the params' init needs: ImageNet ResNet weights (init: imagenet; default: "
                        "found in resources/weights or the torch hub cache) or the model.pt of the "
                        "experiment that init: {from: EXPERIMENT} warm-starts from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="COCO results + semantic maps for one split")
    p.add_argument("--model", required=True, choices=trainers)
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--splits", required=True, type=Path)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, type=Path, help="predictions JSON (COCO results)")
    p.add_argument("--semantic", required=True, type=Path, help="directory for per-image semantic .npz")
    p.add_argument("--params", type=Path, help="YAML file of inference params (thresholds)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("cc-levels", help="CC framework: heatmap peaks and Hough votes at the ground-truth "
                                         "keypoints of a split (has the keypoint detector learned corners?)")
    p.add_argument("--model-dir", required=True, type=Path, help="a trained ccnet model's directory")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--splits", required=True, type=Path)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--out", type=Path, help="JSON of the medians")
    p.set_defaults(func=cmd_cc_levels)

"""``overlapseg maps``: overlap-probability maps of a canonical dataset."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_maps(args) -> None:
    from overlapseg.maps.overlap_maps import write_maps
    from overlapseg.utils.io import read_json

    names = None
    if args.splits:
        splits = read_json(args.splits)
        if args.split not in splits:
            raise ValueError(f"{args.splits}: no split named {args.split!r}")
        names = splits[args.split]
    params = {"background": args.background, "overlap_sigma": args.overlap_sigma,
              "log_scale": args.log_scale, "max_distance": args.max_distance}
    write_maps(args.data, args.variant, args.out, names=names, **params)


def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.maps.overlap_maps import DEFAULTS, VARIANTS

    p = sub.add_parser("maps", help="overlap-probability maps (prob + GT overlap) per image")
    p.add_argument("--data", required=True, type=Path, help="canonical dataset directory")
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--out", required=True, type=Path, help="directory for {name}.npz files")
    p.add_argument("--splits", type=Path, help="splits.json; with --split, only those images")
    p.add_argument("--split", default="train")
    p.add_argument("--background", type=float, default=DEFAULTS["background"])
    p.add_argument("--overlap-sigma", type=float, default=DEFAULTS["overlap_sigma"])
    p.add_argument("--log-scale", type=float, default=DEFAULTS["log_scale"])
    p.add_argument("--max-distance", type=float, default=DEFAULTS["max_distance"])
    p.set_defaults(func=cmd_maps)

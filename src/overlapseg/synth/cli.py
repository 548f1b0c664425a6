"""``overlapseg ccce`` and ``overlapseg copypaste``: synthetic canonical datasets."""
from __future__ import annotations

import argparse
from pathlib import Path

from overlapseg.utils.cli import parse_options


def _names(args) -> list[str] | None:
    if not args.splits:
        return None
    from overlapseg.utils.io import read_json

    splits = read_json(args.splits)
    if args.split not in splits:
        raise ValueError(f"{args.splits}: no split named {args.split!r}")
    return splits[args.split]


def cmd_ccce(args) -> None:
    from overlapseg.synth.ccce import write_ccce

    params = parse_options(args.option)
    if args.mode:
        params["mode"] = args.mode
    write_ccce(args.sources, args.out, n=args.n, seed=args.seed, names=_names(args), **params)


def cmd_copypaste(args) -> None:
    from overlapseg.synth.copypaste import write_copypaste

    write_copypaste(args.sources, args.out, n=args.n, seed=args.seed, names=_names(args),
                    **parse_options(args.option))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", required=True, type=Path, help="canonical dataset of source cells")
    p.add_argument("--n", required=True, type=int, help="number of images to synthesise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="canonical dataset directory to write")
    p.add_argument("--splits", type=Path,
                   help="splits.json: use only the images of --split (never synthesise from test)")
    p.add_argument("--split", default="train")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="method parameter (repeatable), e.g. th=0.4 or scale=[0.9,1.1]")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ccce", help="CCCE cluster-cell synthesis (CC-framework Alg. 1)")
    _common(p)
    p.add_argument("--mode", choices=["divide", "absorbance"], help="overlap compositing rule")
    p.set_defaults(func=cmd_ccce)

    p = sub.add_parser("copypaste", help="copy-paste composites on an empty canvas (thesis 4.4.1)")
    _common(p)
    p.set_defaults(func=cmd_copypaste)

"""Data subcommands: ingest, demo, splits."""
from __future__ import annotations

import argparse
from pathlib import Path

from overlapseg.utils.cli import parse_options


def cmd_ingest(args) -> None:
    from overlapseg.data.ingest import ingest

    ingest(args.format, args.raw, args.out, **parse_options(args.option))


def cmd_demo(args) -> None:
    from overlapseg.data.demo import DemoConfig, write_demo_isbi

    write_demo_isbi(args.out, DemoConfig(n_images=args.n, size=args.size, seed=args.seed))


def cmd_splits(args) -> None:
    from overlapseg.data.canonical import CanonicalDataset
    from overlapseg.data.splits import make_splits, write_splits

    ds = CanonicalDataset(args.data)
    write_splits(args.out, make_splits(ds, seed=args.seed, val_fraction=args.val,
                                       test_fraction=args.test, preset=args.preset))


def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.data.ingest import ADAPTERS

    p = sub.add_parser("ingest", help="raw annotations -> canonical dataset")
    p.add_argument("--format", required=True, choices=sorted(ADAPTERS))
    p.add_argument("--raw", required=True, type=Path, help="folder (or file) holding the raw data")
    p.add_argument("--out", required=True, type=Path, help="canonical dataset directory to write")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="adapter option (repeatable), e.g. subset=train")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("demo", help="render the embedded demo dataset in the isbi2014 layout")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("splits", help="deterministic train/val/test split of a canonical dataset")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.2)
    p.add_argument("--preset", default=None, help="e.g. test-only, isbi2014-official")
    p.set_defaults(func=cmd_splits)

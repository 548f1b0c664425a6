"""``overlapseg`` command line. Each subpackage registers its subcommands in its ``cli`` module;
the Snakemake scripts call the same package functions."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subpackage modules that define ``register(subparsers)``.
SUBCOMMAND_MODULES = [
    "overlapseg.data.cli",
    "overlapseg.train.cli",
    "overlapseg.evaluate.cli",
    "overlapseg.report.cli",
    "overlapseg.maps.cli",
    "overlapseg.synth.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overlapseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # Bad inputs end in one clear line naming the file and problem, not a traceback.
        print(f"overlapseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``overlapseg`` command line. Each subpackage registers its subcommands in its ``cli`` module;
the Snakemake scripts call the same package functions."""
from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys

from overlapseg.utils.cli import error_line

# Subpackage modules that define ``register(subparsers)``.
SUBCOMMAND_MODULES = [
    "overlapseg.data.cli",
    "overlapseg.models.cli",
    "overlapseg.train.cli",
    "overlapseg.evaluate.cli",
    "overlapseg.report.cli",
    "overlapseg.maps.cli",
    "overlapseg.synth.cli",
    "overlapseg.study.cli",
    "overlapseg.segment.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="overlapseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def non_finite_option(args: argparse.Namespace) -> str | None:
    """``--name`` of the first float option (or list of floats) given as NaN or infinity."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            return "--" + dest.replace("_", "-")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    bad = non_finite_option(args)
    if bad:
        print(f"overlapseg {args.command}: error: {bad} must be a finite number, got "
              f"{getattr(args, bad[2:].replace('-', '_'))!r}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError, FloatingPointError) as exc:
        # Bad inputs, failed reads/writes (missing file, no permission, disk full) and a
        # non-finite training loss end in one clear line naming the file and problem.
        print(f"overlapseg {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

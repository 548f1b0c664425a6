"""``overlapseg segment``: a trained model over plain images (files, folders, globs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_segment(args) -> int:
    from overlapseg.segment.run import OUTPUTS, segment_images
    from overlapseg.train.cli import _params

    summary = segment_images(args.model, args.images, args.out, save=args.save or list(OUTPUTS),
                             scale=args.scale, device=args.device, threads=args.threads,
                             pixel_size=args.pixel_size, model_pixel_size=args.model_pixel_size,
                             params=_params(args.params), min_score=args.min_score)
    done, failed = summary["images"], summary["failed"]
    print(f"segment: {len(done)} of {len(done) + len(failed)} images segmented into {args.out} "
          f"({summary['model']['trainer']} model, sha256 {summary['model']['sha256'][:12]})",
          file=sys.stderr)
    if failed:
        print(f"segment: {len(failed)} failed:", file=sys.stderr)
        for f in failed:
            print(f"  {f['error']}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.segment.run import OUTPUTS, parse_save

    def save_list(text: str) -> tuple[str, ...]:
        try:
            return parse_save(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p = sub.add_parser("segment", help="apply a trained model to images; export COCO, label "
                                       "layers, ImageJ ROIs, GeoJSON, overlays, measurements",
                       description="Segment PNG, JPEG or TIFF images (grey or RGB, 8/16-bit, "
                                   "multi-page) with a trained model.pt. Exit code 1 when any "
                                   "image failed (listed at the end and in segment_summary.json).")
    p.add_argument("model", type=Path, help="model.pt written by `overlapseg train` (or its folder)")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--save", type=save_list, default=None,
                   help=f"comma-separated outputs (default all): {','.join(OUTPUTS)}")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float,
                      help="the images' factor to the study's reference pixel size (as "
                           "datasets.<name>.scale); default: images at the model's training scale")
    size.add_argument("--pixel-size", type=float,
                      help="pixel size of the images (with --model-pixel-size, same unit)")
    p.add_argument("--model-pixel-size", type=float,
                   help="pixel size of the images the model was trained on")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="leave out instances scored below this (default 0: all the model reports)")
    p.add_argument("--params", type=Path, help="YAML of inference params to override (thresholds, tiles)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto (default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=cmd_segment)

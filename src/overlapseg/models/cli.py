"""``overlapseg weights fetch``: torchvision's ImageNet ResNet weights into ``resources/weights/``.

Run where there is internet (on clusters, the submit host): training jobs only read the file.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_fetch(args) -> None:
    from overlapseg.models.weights import fetch_imagenet_weights

    print(fetch_imagenet_weights(args.arch, args.out))


def register(sub: argparse._SubParsersAction) -> None:
    from overlapseg.models.weights import RESNET_ARCHS, WEIGHTS_DIR

    p = sub.add_parser("weights", help="pretrained backbone weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="torchvision's IMAGENET1K_V1 ResNet weights, hash-checked: "
                                      "found in --out or the torch hub cache, else downloaded")
    f.add_argument("--arch", required=True, choices=RESNET_ARCHS)
    f.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"folder (default {WEIGHTS_DIR})")
    f.set_defaults(func=cmd_fetch)

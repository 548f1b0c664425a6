"""``overlapseg evaluate``: the full metric suite on COCO ground truth + COCO results."""
from __future__ import annotations



def cmd_evaluate(args) -> None:
    from overlapseg.evaluate.evaluator import evaluate, write_metrics
    from overlapseg.utils.io import read_json

    bins = None
    if args.overlap_bins:
        edges = [float(v) for v in args.overlap_bins]
        bins = list(zip(edges[:-1], edges[1:]))
    metrics = evaluate(args.gt, args.pred, categories=tuple(args.categories), iou_type=args.iou_type,
                       semantic_dir=args.semantic, border_width=args.border_width,
                       boundary_dilation=args.boundary_dilation, score_threshold=args.score_threshold,
                       max_detections=args.max_detections,
                       **({"overlap_bins": bins} if bins else {}))
    provenance = read_json(args.provenance) if args.provenance else None
    write_metrics(args.out, metrics, provenance)
    mean = metrics["mean"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{args.out}: AP {fmt(mean['AP'])}  boundary_AP {fmt(mean['boundary_AP'])}  "
          f"AJI {fmt(mean['AJI'])}  F1 {fmt(mean['F1'])}")


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="compute every metric of the study for one prediction file",
                              description=__doc__)
    p.add_argument("--gt", required=True, help="COCO ground truth (e.g. results/D/data/test_annotations.json)")
    p.add_argument("--pred", required=True, help="COCO results list (RLE + score)")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--categories", nargs="+", default=["cytoplasm", "nucleus"])
    p.add_argument("--iou-type", choices=["segm", "boundary"], default="segm",
                   help="IoU behind the AP keys: mask IoU or min(mask, boundary IoU)")
    p.add_argument("--semantic", default=None, help="directory of {image name}.npz semantic predictions")
    p.add_argument("--provenance", default=None, help="JSON file stored under 'provenance'")
    p.add_argument("--overlap-bins", nargs="+", type=float, default=None, metavar="EDGE",
                   help="bin edges of the overlap breakdown (default 0 0.1 0.3 1)")
    p.add_argument("--border-width", type=int, default=2)
    p.add_argument("--boundary-dilation", type=float, default=0.02)
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="score cut for AJI/Dice/F1/ISBI/pixel-F1 (AP uses all predictions)")
    p.add_argument("--max-detections", type=int, default=None,
                   help="predictions per image and category that AP counts (default: at least the "
                        "most of any image, so none is dropped; a smaller value warns)")
    p.set_defaults(func=cmd_evaluate)

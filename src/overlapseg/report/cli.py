"""``overlapseg report table|figures``: paper-style tables and figures from metrics files;
``overlapseg audit``: the provenance chain of one table cell (``overlapseg.report.audit``)."""
from __future__ import annotations


def cmd_table(args) -> None:
    from overlapseg.report.tables import write_tables

    for path in write_tables(args.metrics, args.experiments or _names(args.metrics), args.out_dir,
                             preset=args.preset, pixel=True if args.pixel else None, dataset=args.dataset):
        print(path)


def cmd_figures(args) -> None:
    from overlapseg.report.figures import write_figures

    experiments = args.experiments or _names(args.metrics)
    for path in write_figures(args.data, args.gt, args.predictions, args.metrics, experiments,
                              args.out_dir, args.dataset, n_images=args.n_images,
                              score_threshold=args.score_threshold):
        print(path)


def _names(paths) -> list[str]:
    from pathlib import Path

    return [Path(p).stem for p in paths]


def register(subparsers) -> None:
    from overlapseg.report import audit
    from overlapseg.report.tables import PRESETS

    audit.register(subparsers)
    p = subparsers.add_parser("report", help="tables and figures from metrics files")
    sub = p.add_subparsers(dest="report_command", required=True)
    t = sub.add_parser("table", help="metrics (and pixel) tables as CSV, Markdown, LaTeX")
    t.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files (one per experiment)")
    t.add_argument("--experiments", nargs="+", default=None, help="row names (default: file stems)")
    t.add_argument("--out-dir", required=True)
    t.add_argument("--preset", choices=sorted(PRESETS), default="default")
    t.add_argument("--pixel", action="store_true", help="always write pixel.* tables")
    t.add_argument("--dataset", default="")
    t.set_defaults(func=cmd_table)
    f = sub.add_parser("figures", help="qualitative overlays, PR curves, AP vs overlap (PNG + PDF)")
    f.add_argument("--data", required=True, help="canonical dataset directory (images)")
    f.add_argument("--gt", required=True, help="COCO test annotations")
    f.add_argument("--predictions", nargs="+", required=True)
    f.add_argument("--metrics", nargs="+", required=True)
    f.add_argument("--experiments", nargs="+", default=None)
    f.add_argument("--out-dir", required=True)
    f.add_argument("--dataset", required=True, help="file name prefix")
    f.add_argument("--n-images", type=int, default=3)
    f.add_argument("--score-threshold", type=float, default=0.5)
    f.set_defaults(func=cmd_figures)

"""``overlapseg config show|check``: a study profile resolved against its catalogue."""
from __future__ import annotations

from pathlib import Path

ROOT_MARKERS = ("Snakefile", "workflow")


def _basedir(start: Path) -> Path:
    """The workflow folder (holding Snakefile) the catalogue paths are relative to."""
    for folder in (start, *start.parents):
        if all((folder / m).exists() for m in ROOT_MARKERS):
            return folder
    return Path.cwd()


def cmd_show(args) -> None:
    import yaml

    from overlapseg.study.config import load_study
    from overlapseg.train.base import get_trainer

    study = load_study(args.configfile, _basedir(Path(args.configfile[0]).resolve().parent))
    for name in args.names or list(study["experiments"]) + list(study.get("gan") or {}):
        if name in study["experiments"]:
            entry = dict(study["experiments"][name])
            kind = "experiment"
        elif name in (study.get("gan") or {}):
            entry = dict(study["gan"][name])
            kind = "generator"
        else:
            known = sorted([*study["experiments"], *(study.get("gan") or {})])
            raise KeyError(f"{name!r} is neither an experiment nor a generator of the study "
                           f"(known: {', '.join(known)})")
        entry["params"] = get_trainer(entry["model"]).resolve_params(entry.get("params"))
        print(yaml.safe_dump({f"{kind} {name}": entry}, sort_keys=False, width=100), end="")


def cmd_check(args) -> None:
    from overlapseg.study.config import load_study
    from overlapseg.study.plan import StudyPlan

    study = load_study(args.configfile, _basedir(Path(args.configfile[0]).resolve().parent))
    plan = StudyPlan(study)
    plan.check()
    print(f"ok: {len(plan.runs)} trained runs, {len(plan.generators)} generators, "
          f"{len(plan.tables)} tables, datasets {', '.join(plan.datasets)}")


def register(subparsers) -> None:
    p = subparsers.add_parser("config", help="show or check a study profile resolved against its catalogue")
    sub = p.add_subparsers(dest="config_command", required=True)
    s = sub.add_parser("show", help="the resolved entry (model, label, datasets, full params) of "
                                    "experiments or generators")
    s.add_argument("names", nargs="*", help="experiment or generator names (default: all)")
    s.add_argument("--configfile", nargs="+", default=["config.yaml"],
                   help="profile(s), merged in order as snakemake --configfile does")
    s.set_defaults(func=cmd_show)
    c = sub.add_parser("check", help="resolve and check a profile as the workflow does")
    c.add_argument("--configfile", nargs="+", default=["config.yaml"])
    c.set_defaults(func=cmd_check)

# What the rules derive from the resolved config lives in overlapseg.study.plan (unit-tested);
# this file binds it to the rules as small input functions. Results paths: overlapseg.study.paths.
from overlapseg.study import paths
from overlapseg.study.plan import StudyPlan
from overlapseg.maps.overlap_maps import VARIANTS as MAP_VARIANTS

STUDY = StudyPlan(config)
DATASETS = STUDY.datasets
EXPERIMENTS = STUDY.experiments
RUNS = STUDY.runs
GENERATORS = STUDY.generators
SEGMENT = config.get("segment") or {}  # new images to segment with a trained model
CONDA_ENV = "../../envs/overlapseg.yaml"


def _alternatives(names):
    """A wildcard constraint matching exactly these names (never everything when empty)."""
    return "|".join(names) or "^$"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    experiment=_alternatives(EXPERIMENTS),
    split="train|val|test",


def _table(table, ext):
    """A table output pattern (paths.TABLE) with the {dataset} wildcard kept."""
    return paths.TABLE.format(dataset="{dataset}", table=table, ext=ext)


def _fig(kind, ext):
    """A figure output pattern (paths.FIGURE) with the {dataset} wildcard kept."""
    return paths.FIGURE.format(dataset="{dataset}", kind=kind, ext=ext)


# ----------------------------------------------------------------------------- input functions
def raw_input(wc):
    return STUDY.raw_input(wc.dataset)


def train_inputs(wc):
    return STUDY.train_inputs(wc.experiment, wc.dataset)


def seed_metrics(wc):
    return [paths.metrics_file(wc.dataset, run) for run in STUDY.seed_runs[wc.experiment]]


def gan_stage_figures(wc):
    if wc.generator in STUDY.coarse_to_fine_generators():
        return [paths.figure_file(wc.dataset, f"{wc.generator}_stages")]
    return []


def final_outputs():
    return STUDY.final_outputs()


STUDY.check()

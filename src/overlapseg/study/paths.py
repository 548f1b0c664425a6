"""Every results path of the workflow, defined once.

Each ``*_PATTERN`` is the Snakemake output pattern (``{dataset}``, ``{experiment}``... wildcards)
that the rules declare; the functions of the same name fill it in for input functions, the
provenance maps and ``verify``. Change a layout here and every rule, table and audit follows.
"""
from __future__ import annotations

RESULTS = "results"
FIGURES = f"{RESULTS}/figures"

RAW_DEMO_IMAGES = RESULTS + "/{dataset}/raw/isbi_train.mat"
RAW_DEMO_GT = RESULTS + "/{dataset}/raw/isbi_train_GT.mat"
DATA = RESULTS + "/{dataset}/data"
SPLITS = RESULTS + "/{dataset}/splits.json"
SPLIT_ANNOTATIONS = RESULTS + "/{dataset}/splits/{split}_annotations.json"
MAPS = RESULTS + "/{dataset}/maps/{source}/{variant}"
SYNTH = RESULTS + "/{dataset}/synth/{source}"
GAN_MODEL = RESULTS + "/{dataset}/gan/{generator}/model.pt"
GAN_QUALITY = RESULTS + "/{dataset}/gan/{generator}/quality.json"
WEIGHTS = "resources/weights/{file}"
MODEL = RESULTS + "/{dataset}/models/{experiment}/model.pt"
PREDICTIONS = RESULTS + "/{dataset}/predictions/{experiment}.json"
SEMANTIC = RESULTS + "/{dataset}/semantic/{experiment}"
# the validation split's predictions, from which evaluate picks each model's score thresholds
PREDICTIONS_VAL = RESULTS + "/{dataset}/predictions_val/{experiment}.json"
SEMANTIC_VAL = RESULTS + "/{dataset}/semantic_val/{experiment}"
METRICS = RESULTS + "/{dataset}/metrics/{experiment}.json"
TABLE = RESULTS + "/{dataset}/tables/{table}.{ext}"
PROVENANCE = RESULTS + "/{dataset}/tables/{table}.provenance.json"
FIGURE = FIGURES + "/{dataset}_{kind}.{ext}"
SEGMENT = RESULTS + "/segment/{name}"


def data_dir(dataset: str, source: str = "original") -> str:
    """The canonical dataset of a training source: the ingested data or a synthetic set."""
    if source == "original":
        return DATA.format(dataset=dataset)
    return SYNTH.format(dataset=dataset, source=source)


def splits_file(dataset: str) -> str:
    return SPLITS.format(dataset=dataset)


def split_annotations(dataset: str, split: str) -> str:
    return SPLIT_ANNOTATIONS.format(dataset=dataset, split=split)


def maps_dir(dataset: str, source: str, variant: str) -> str:
    return MAPS.format(dataset=dataset, source=source, variant=variant)


def gan_model(dataset: str, generator: str) -> str:
    return GAN_MODEL.format(dataset=dataset, generator=generator)


def gan_quality(dataset: str, generator: str) -> str:
    return GAN_QUALITY.format(dataset=dataset, generator=generator)


def model_file(dataset: str, experiment: str) -> str:
    return MODEL.format(dataset=dataset, experiment=experiment)


def predictions_file(dataset: str, experiment: str) -> str:
    return PREDICTIONS.format(dataset=dataset, experiment=experiment)


def semantic_dir(dataset: str, experiment: str) -> str:
    return SEMANTIC.format(dataset=dataset, experiment=experiment)


def metrics_file(dataset: str, experiment: str) -> str:
    return METRICS.format(dataset=dataset, experiment=experiment)


def table_file(dataset: str, table: str, ext: str) -> str:
    return TABLE.format(dataset=dataset, table=table, ext=ext)


def provenance_file(dataset: str, table: str) -> str:
    return PROVENANCE.format(dataset=dataset, table=table)


def figure_file(dataset: str, kind: str, ext: str = "png") -> str:
    return FIGURE.format(dataset=dataset, kind=kind, ext=ext)


def weights_file(file: str) -> str:
    return WEIGHTS.format(file=file)

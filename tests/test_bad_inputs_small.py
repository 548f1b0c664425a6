"""Smaller bad inputs of issue 31: each one clear line where it happens."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from overlapseg.cli import main
from overlapseg.data.canonical import CanonicalDataset, DataError, Instance, Sample, write_canonical_dataset
from overlapseg.data.ingest import ingest
from overlapseg.data.splits import make_splits
from overlapseg.synth.ccce import write_ccce
from overlapseg.train.api import build_inputs, train_experiment
from overlapseg.train.base import get_trainer
from overlapseg.utils.io import write_json
from test_bad_inputs import cell_ann, disc, write_coco


def _dataset(path, n_images: int, with_cells: bool = True):
    samples = [Sample(f"s{i}", np.full((40, 40), 99, np.uint8),
                      [Instance(disc(20, 20, 9), "cytoplasm")] if with_cells else [])
               for i in range(n_images)]
    return write_canonical_dataset(samples, path)


def test_one_image_dataset_has_no_test_split(tmp_path):
    ds = CanonicalDataset(_dataset(tmp_path / "d", 1))
    with pytest.raises(DataError, match=r"annotations.json: split leaves no test images \(1 image\(s\), "
                                        r"test_fraction 0.2\); add images"):
        make_splits(ds)
    assert make_splits(ds, val_fraction=0.0, test_fraction=0.0)["train"] == ["s0"]  # a training-only dataset


def test_dataset_without_instances_warns_at_training(tmp_path, caplog):
    data = _dataset(tmp_path / "d", 3, with_cells=False)
    write_json(tmp_path / "splits.json", {"train": ["s0", "s1"], "val": [], "test": ["s2"]})
    klass = get_trainer("seunet")
    params = {**klass.SMOKE_PARAMS, "iterations": 1, "checkpoint_every": 1, "threads": 1}
    with caplog.at_level(logging.WARNING, logger="overlapseg.train.base"):
        train_experiment("seunet", tmp_path / "m" / "empty" / "model.pt", params, 0,
                         build_inputs(data, tmp_path / "splits.json"), "cpu")
    (msg,) = [r.getMessage() for r in caplog.records if "no annotated instance" in r.getMessage()]
    assert msg.startswith(f"experiment 'empty': its 2 training image(s) in {data} hold no annotated instance")


def test_ccce_without_cells_names_the_dataset(tmp_path):
    data = _dataset(tmp_path / "d", 2, with_cells=False)
    with pytest.raises(DataError, match="CCCE needs at least one source image with cells; none of the 2 "
                                        "source image"):
        write_ccce(data, tmp_path / "ccce", n=1, seed=0, pool="all")
    with pytest.raises(DataError) as err:
        write_ccce(data, tmp_path / "ccce", n=1, seed=0, pool="all")
    assert str(err.value).startswith(str(data))


def test_non_finite_train_param_names_the_key(tmp_path, capsys):
    data = _dataset(tmp_path / "d", 3)
    write_json(tmp_path / "splits.json", {"train": ["s0", "s1"], "val": [], "test": ["s2"]})
    (tmp_path / "p.yaml").write_text("lr: .nan\n")
    assert main(["train", "--model", "seunet", "--data", str(data), "--splits", str(tmp_path / "splits.json"),
                 "--out", str(tmp_path / "m"), "--params", str(tmp_path / "p.yaml"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "overlapseg train: error: seunet param lr=nan: must be a finite number"]
    with pytest.raises(ValueError, match=r"param augment.brightness=inf: must be a finite number"):
        get_trainer("maskrcnn")({"augment": {"brightness": float("inf")}})


def test_nucleus_outside_every_cell_is_logged_at_ingest(tmp_path, caplog):
    from overlapseg.data.canonical import encode_mask

    far = {"id": 11, "category_id": 2, "segmentation": encode_mask(disc(36, 36, 2))}
    inside = {"id": 12, "category_id": 2, "segmentation": encode_mask(disc(20, 20, 3)), "parent_id": 10}
    raw = write_coco(tmp_path / "raw", [cell_ann(), far, inside])
    with caplog.at_level(logging.WARNING, logger="overlapseg.data.ingest"):
        ingest("coco", raw, tmp_path / "d")
    (msg,) = [r.getMessage() for r in caplog.records if "outside every cell" in r.getMessage()]
    assert msg == (f"{raw}: 1 nucleus instance(s) in 1 image(s) lie outside every cell (kept without a "
                   "parent cell), e.g. 1 in image 'a'")
    assert len(CanonicalDataset(tmp_path / "d").annotations("a", "nucleus")) == 2

import json

import numpy as np
import pytest
import torch

from fixtures_isbi import write_isbi_fixture
from overlapseg.data.canonical import CanonicalDataset
from overlapseg.data.ingest import ingest
from overlapseg.models.maskrcnn import build_maskrcnn
from overlapseg.train import base, maskrcnn
from overlapseg.train.api import predict_data
from overlapseg.train.base import DataRef, TrainInputs


def fit(data, out, params, seed):
    return maskrcnn.MaskRCNNTrainer(params, seed, "cpu", TrainInputs([DataRef(data)])).train(out)

PARAMS = {"image_size": 64, "iterations": 4, "warmup": 2, "checkpoint_every": 2, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mr")
    write_isbi_fixture(root / "raw", n_images=3, size=64, subsets=("train",))
    ingest("isbi2014", root / "raw", root / "ds")
    return root / "ds"


def test_trainable_groupnorm_no_frozen_bn():
    model = build_maskrcnn(depth=18, image_size=64)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and "FrozenBatchNorm2d" not in kinds and "BatchNorm2d" not in kinds
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_pretrained_setup_frozen_bn_frozen_stem_imagenet_normalisation():
    model = build_maskrcnn(depth=18, image_size=64, frozen_bn=True)
    kinds = {type(m).__name__ for m in model.backbone.body.modules()}
    assert "FrozenBatchNorm2d" in kinds and "GroupNorm" not in kinds
    trainable = {n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert model.transform.image_mean == [0.485, 0.456, 0.406]
    assert build_maskrcnn(depth=18, image_size=64).transform.image_mean == [0.5, 0.5, 0.5]


def test_augment_keeps_image_and_masks_aligned():
    rng = np.random.default_rng(0)
    image = np.zeros((8, 8), np.float32)
    image[1, 2] = 1.0
    masks = (image > 0)[None]
    for _ in range(10):
        out, m = maskrcnn.augment(image, masks, rng, {"flip": True, "rot90": True})
        assert np.array_equal(out > 0.5, m[0])


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    return fit(data, tmp_path_factory.mktemp("m") / "a", PARAMS, seed=1)


def test_resume_after_interruption_is_exact(data, trained, tmp_path, monkeypatch):
    original_save = base.Trainer._save_checkpoint

    def save_then_crash(*args, **kwargs):
        original_save(*args, **kwargs)
        raise KeyboardInterrupt  # the job is killed right after its first checkpoint

    monkeypatch.setattr(base.Trainer, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path / "b", PARAMS, seed=1)
    assert not (tmp_path / "b" / "model.pt").exists()
    monkeypatch.setattr(base.Trainer, "_save_checkpoint", original_save)
    resumed = fit(data, tmp_path / "b", PARAMS, seed=1)
    assert resumed.read_bytes() == trained.read_bytes()
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [1, 2, 3, 4]
    assert log == (trained.parent / "log.csv").read_text().splitlines()


def test_changed_params_do_not_resume_a_checkpoint(data, trained, tmp_path):
    """Issue 11 item 2: a checkpoint written with another lr is not resumed."""
    out = tmp_path / "lr"
    fit(data, out, {**PARAMS, "iterations": 2}, seed=1)
    fit(data, out, {**PARAMS, "lr": 0.01}, seed=1)
    timing = json.loads((out / "timing.json").read_text())
    assert timing["iterations_run"] == PARAMS["iterations"]  # trained from scratch
    assert torch.load(out / "model.pt", weights_only=False)["params"]["lr"] == 0.01


def test_more_iterations_continue_from_the_final_checkpoint(data, trained, tmp_path):
    out = tmp_path / "grow"
    fit(data, out, PARAMS, seed=1)
    fit(data, out, {**PARAMS, "iterations": 6}, seed=1)
    assert json.loads((out / "timing.json").read_text())["iterations_run"] == 2


def test_nan_loss_fails_with_context_and_writes_no_checkpoint(data, tmp_path):
    with pytest.raises(ValueError, match=r"param lr=nan: must be a finite number"):  # caught at load
        fit(data, tmp_path / "nan_lr", {**PARAMS, "lr": float("nan")}, seed=0)
    # a diverging run (finite but absurd lr) is stopped at the first non-finite loss
    with pytest.raises(FloatingPointError, match=r"'nan_run': non-finite training loss at iteration \d"):
        fit(data, tmp_path / "nan_run", {**PARAMS, "lr": 1e30, "grad_clip": None}, seed=0)
    assert not (tmp_path / "nan_run" / "model.pt").exists()
    assert not (tmp_path / "nan_run" / "checkpoints" / "last.pt").exists()


def test_model_file_is_byte_identical_on_rerun(data, trained, tmp_path):
    """Issue 11 item 14: no temporary file name inside the zip records."""
    again = fit(data, tmp_path / "a", PARAMS, seed=1)
    assert again.read_bytes() == trained.read_bytes()
    assert b".model.pt." not in again.read_bytes()


def test_predict_writes_coco_results_and_semantics(data, trained, tmp_path):
    names = CanonicalDataset(data).names[:2]
    predict_data(trained.parent, DataRef(data, names), tmp_path / "p.json", tmp_path / "sem",
                 {"score_threshold": 0.0}, "cpu")
    results = json.loads((tmp_path / "p.json").read_text())
    ids = {CanonicalDataset(data).images[n]["id"] for n in names}
    assert all(r["image_id"] in ids and r["category_id"] in (1, 2) and 0 <= r["score"] <= 1
               for r in results)
    for n in names:
        sem = np.load(tmp_path / "sem" / f"{n}.npz")
        assert {"cytoplasm", "nucleus", "overlap", "border", "background"} <= set(sem.files)
        assert sem["cytoplasm"].shape == (64, 64)


def test_unknown_param_is_rejected():
    with pytest.raises(KeyError, match="iteratons"):
        maskrcnn.MaskRCNNTrainer.resolve_params({"iteratons": 3})

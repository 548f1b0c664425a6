import json

import numpy as np
import pytest
import torch

from fixtures_isbi import write_isbi_fixture
from overlapseg.data.canonical import CanonicalDataset
from overlapseg.data.ingest import ingest
from overlapseg.models.maskrcnn import build_maskrcnn
from overlapseg.train import maskrcnn
from overlapseg.train.api import DataRef

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


def test_pretrained_backbone_from_local_file(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), path)
    model = build_maskrcnn(depth=18, image_size=64, pretrained_backbone=path)
    assert torch.equal(model.backbone.body.conv1.weight, reference.conv1.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        build_maskrcnn(depth=18, image_size=64, pretrained_backbone=bad)


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
    return maskrcnn.train([DataRef(data)], None, tmp_path_factory.mktemp("m") / "a", PARAMS, seed=1)


def test_resume_after_interruption_is_exact(data, trained, tmp_path, monkeypatch):
    original_save = maskrcnn.save_checkpoint

    def save_then_crash(*args, **kwargs):
        original_save(*args, **kwargs)
        raise KeyboardInterrupt  # the job is killed right after its first checkpoint

    monkeypatch.setattr(maskrcnn, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        maskrcnn.train([DataRef(data)], None, tmp_path / "b", PARAMS, seed=1)
    assert not (tmp_path / "b" / "model.pt").exists()
    monkeypatch.setattr(maskrcnn, "save_checkpoint", original_save)
    resumed = maskrcnn.train([DataRef(data)], None, tmp_path / "b", PARAMS, seed=1)
    a = torch.load(trained, weights_only=False)["model"]
    b = torch.load(resumed, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in log[1:]] == [0, 1, 2, 3]
    assert log == (trained.parent / "log.csv").read_text().splitlines()


def test_nan_loss_fails_with_context(data, tmp_path):
    with pytest.raises(FloatingPointError, match=r"nan_run: non-finite training loss at iteration \d"):
        maskrcnn.train([DataRef(data)], None, tmp_path / "nan_run", {**PARAMS, "lr": float("nan")}, seed=0)
    assert not (tmp_path / "nan_run" / "model.pt").exists()


def test_predict_writes_coco_results_and_semantics(data, trained, tmp_path):
    names = CanonicalDataset(data).names[:2]
    maskrcnn.predict(trained.parent, DataRef(data, names), tmp_path / "p.json", tmp_path / "sem",
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
        maskrcnn.resolve_params({"iteratons": 3})

"""Model files and detector inference on unusual inputs (issue 31, items 2 and 4): corrupt
``model.pt``, ``predict --params`` with keys that cannot change at inference, per-image
detection limits on large images, and images smaller than the training size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from overlapseg.cli import main
from overlapseg.train.base import Trainer, get_trainer, write_state
from overlapseg.train.maskrcnn import AREA_CAPS
from overlapseg.utils.io import write_json

DETECTORS = ["maskrcnn", "irnet", "donet", "ccnet"]


def _trainer(name: str, **params):
    klass = get_trainer(name)
    trainer = klass({**klass.SMOKE_PARAMS, "threads": 1, **params}, seed=0, device="cpu")
    torch.manual_seed(0)
    return trainer, trainer.build_model().eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A real (untrained) Mask R-CNN model.pt in torchvision state-dict format."""
    d = tmp_path_factory.mktemp("model") / "mr"
    trainer, model = _trainer("maskrcnn", detections_per_image=5)
    write_state(d / "model.pt", trainer.export(model))
    return d


def _predict(tmp_path, model_dir, params=None):
    write_json(tmp_path / "splits.json", {"train": [], "val": [], "test": ["a"]})
    args = ["predict", "--model", "maskrcnn", "--model-dir", str(model_dir), "--data", str(tmp_path / "d"),
            "--splits", str(tmp_path / "splits.json"), "--out", str(tmp_path / "p.json"),
            "--semantic", str(tmp_path / "sem"), "--device", "cpu"]
    if params is not None:
        (tmp_path / "p.yaml").write_text(params)
        args += ["--params", str(tmp_path / "p.yaml")]
    return main(args)


# ----------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_corrupt_model_file_is_one_line(tmp_path, model_dir, capsys, damage):
    good = (model_dir / "model.pt").read_bytes()
    data = {"truncated": good[:len(good) // 2], "empty": b"",
            "random": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()}[damage]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes(data)
    assert _predict(tmp_path, bad) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"overlapseg predict: error: {bad / 'model.pt'}: not a readable overlapseg model")


def test_model_file_of_another_format_is_one_line(tmp_path, capsys):
    d = tmp_path / "other"
    d.mkdir()
    torch.save({"weights": torch.zeros(2)}, d / "model.pt")
    assert _predict(tmp_path, d) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"overlapseg predict: error: {d / 'model.pt'}: not a readable overlapseg model")


# ----------------------------------------------------------------------------- item 2: --params
@pytest.mark.parametrize("params, message", [
    ("lr: 0.1\n", "lr only change(s) training (retrain to change it); inference params of maskrcnn: "),
    ("detections_per_imgae: 300\n", "unknown maskrcnn param(s) detections_per_imgae; inference params: "),
])
def test_predict_rejects_keys_that_are_not_inference_params(tmp_path, model_dir, capsys, params, message):
    assert _predict(tmp_path, model_dir, params) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"overlapseg predict: error: {tmp_path / 'p.yaml'}: {message}")
    if "unknown" in message:
        assert line.endswith("did you mean 'detections_per_image'?")


def test_detections_per_image_is_an_inference_key(model_dir):
    get_trainer("maskrcnn").check_inference_params({"detections_per_image": 300, "score_threshold": 0.1}, "p")
    trainer, model = Trainer.load(model_dir, "cpu", {"detections_per_image": 300})
    assert trainer.params["detections_per_image"] == 300
    assert model.roi_heads.detections_per_img == 300


# ----------------------------------------------------------------------------- item 2: large / small images
def _spy(model):
    """Records, on every forward call, the input sizes and every per-image limit in force."""
    seen = []

    def hook(module, args):
        caps = sorted((name, getattr(m, name)) for m in module.modules() for name in AREA_CAPS
                      if isinstance(getattr(m, name, None), int))
        rpn = [m._post_nms_top_n["testing"] for m in module.modules() if hasattr(m, "_post_nms_top_n")]
        seen.append({"sizes": [tuple(t.shape[-2:]) for t in args[0]], "caps": caps, "rpn": rpn})

    model.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize("name", DETECTORS)
def test_detection_limits_scale_with_image_area(name):
    trainer, model = _trainer(name, detections_per_image=3)  # smoke image_size: 48 px
    seen = _spy(model)
    with torch.no_grad():
        trainer.detect(model, np.zeros((48, 48), np.float32))
        trainer.detect(model, np.zeros((96, 96), np.float32))  # 4x the training area
    small, large = seen[0], seen[1]
    assert ("detections_per_img" in dict(small["caps"])) or ("detections_per_image" in dict(small["caps"]))
    for (k, v), (k2, v2) in zip(small["caps"], large["caps"]):
        assert k == k2 and v2 == 4 * v
    assert [4 * v for v in small["rpn"]] == large["rpn"]
    assert dict(small["caps"]).get("detections_per_img", dict(small["caps"]).get("detections_per_image")) == 3
    # restored after the call
    third = _spy(model)
    with torch.no_grad():
        trainer.detect(model, np.zeros((48, 48), np.float32))
    assert third[0]["caps"] == small["caps"]


@pytest.mark.parametrize("name", ["maskrcnn", "ccnet"])
def test_images_smaller_than_the_training_size_are_padded(name):
    trainer, model = _trainer(name, score_threshold=0.0)
    seen = _spy(model)
    image = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    with torch.no_grad():
        masks, scores, labels = trainer.detect(model, image)
    assert seen[0]["sizes"] == [(48, 48)]
    assert masks.shape[1:] == (20, 30) and len(masks) == len(scores) == len(labels)
    assert all(m.any() for m in masks)

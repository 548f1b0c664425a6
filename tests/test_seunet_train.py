import json
import math

import numpy as np
import pytest
import torch

from overlapseg.data.canonical import (CanonicalDataset, DataError, Instance, Sample,
                                       decode_segmentation, write_canonical_dataset)
from overlapseg.train import seunet as T
from overlapseg.train.api import predict_data
from overlapseg.train.base import DataRef, TrainInputs, get_trainer


def fit(refs, val, out, params, seed, maps=None):
    inputs = TrainInputs(refs, val, map_variant=maps)
    return T.SEUNetTrainer(params, seed, "cpu", inputs).train(out)

TINY = {"base_channels": 4, "depth": 2, "crop": 32, "batch_size": 2, "iterations": 4,
        "lr": 1e-3, "checkpoint_every": 2, "tile": 32, "stride": 16, "threads": 1,
        "watershed": {"min_size": 5, "min_nucleus_size": 2, "min_distance": 4}}


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four 48x48 images with two overlapping discs (cells) and their nuclei."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        shape = (48, 48)
        image = np.full(shape, 220, np.uint8)
        instances = []
        cy, cx = rng.integers(16, 24, 2)
        for dy, dx in ((0, 0), (4, 14)):
            cell = disc(shape, cy + dy, cx + dx - 6, 11)
            nuc = disc(shape, cy + dy, cx + dx - 6, 3)
            image[cell] -= 50
            image[nuc] -= 60
            instances.append(Instance(cell, "cytoplasm"))
            instances.append(Instance(nuc, "nucleus", len(instances) - 1))
        samples.append(Sample(f"img{i}", image, instances))
    return write_canonical_dataset(samples, tmp_path_factory.mktemp("seunet") / "data")


def test_registry_exposes_trainer():
    assert get_trainer("seunet") is T.SEUNetTrainer


def test_params_are_validated():
    with pytest.raises(KeyError, match="unknown seunet params"):
        T.resolve_params({"hedas": "base"})
    with pytest.raises(KeyError, match="unknown seunet loss_weights keys"):
        T.resolve_params({"loss_weights": {"nuclei": 1.0}})
    with pytest.raises(ValueError, match="overlap head"):
        T.SEUNetTrainer({}, 0, "cpu", TrainInputs([], map_variant="v4"))
    with pytest.raises(KeyError, match="map_variant"):  # the map variant is an input, not a param
        T.resolve_params({"overlap": True, "map_variant": "v4"})
    p = T.resolve_params({"thresholds": {"cytoplasm": 0.4}})
    assert p["thresholds"]["cytoplasm"] == 0.4 and p["thresholds"]["overlap"] == 0.3


def test_loss_is_weighted_bce_plus_map_recalibrated_focal():
    # logits 0 -> p = 0.5. BCE = ln 2 per pixel. Focal (alpha .25, gamma 2) with soft target
    # y' = y (1 - P): pixel y=1, P=0.5 -> y'=.5: .25*.25*.5*ln2 + .75*.25*.5*ln2 = .125 ln2;
    # pixel y=0 -> y'=0: .75*.25*ln2 = .1875 ln2; mean = .15625 ln2.
    params = T.resolve_params({"heads": "base", "overlap": True,
                               "loss_weights": {"cytoplasm": 2.0, "overlap": 3.0}})
    logits = torch.zeros(1, 2, 1, 2)
    targets = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])
    prob_map = torch.tensor([[[0.5, 0.5]]])
    total, parts = T.semantic_loss(logits, targets, prob_map, ("cytoplasm", "overlap"), params)
    ln2 = math.log(2)
    assert float(parts["cytoplasm"]) == pytest.approx(ln2)
    assert float(parts["overlap"]) == pytest.approx(0.15625 * ln2)
    assert float(total) == pytest.approx(2 * ln2 + 3 * 0.15625 * ln2)
    # without a map the overlap target stays y: pixel y=1 -> .25*.25*ln2, y=0 -> .75*.25*ln2
    _, parts = T.semantic_loss(logits, targets, None, ("cytoplasm", "overlap"), params)
    assert float(parts["overlap"]) == pytest.approx(0.125 * ln2)


def test_augment_keeps_targets_binary_and_shapes():
    rng = np.random.default_rng(3)
    stack = np.zeros((4, 40, 40), np.float32)
    stack[0] = rng.random((40, 40))
    stack[1:3, 10:30, 10:30] = 1
    stack[3] = rng.random((40, 40))
    cfg = {"flip": True, "dropout_holes": 3, "dropout_size": 0.2, "elastic_p": 1.0,
           "elastic_alpha": 4.0, "elastic_sigma": 5.0}
    out = T.augment(stack, 2, rng, cfg)
    assert out.shape == stack.shape and out.dtype == np.float32
    assert set(np.unique(out[1:3])) <= {0.0, 1.0}
    assert 0.8 < out[1].sum() / stack[1].sum() < 1.2   # mild deformation
    assert (out[0] == 0).sum() >= 8 * 8                # dropout holes in the image only
    assert out[3].min() > 0 or (stack[3] == 0).any()   # the map is never dropped out


def test_training_data_targets_follow_semantic_definitions(dataset):
    data = T.SemanticData([DataRef(dataset, ["img0"])], ("cytoplasm", "overlap"), "v4")
    (item,) = data.items
    assert item.shape == (4, 48, 48)
    ds = CanonicalDataset(dataset)
    cells = ds.masks("img0", "cytoplasm")
    np.testing.assert_array_equal(item[1], cells.any(0))
    np.testing.assert_array_equal(item[2], cells.sum(0) >= 2)
    assert 0 <= item[3].min() and item[3].max() <= 1


def test_output_biases_start_at_class_priors(dataset, tmp_path):
    data = T.SemanticData([DataRef(dataset)], ("cytoplasm", "nucleus"), None)
    model = T.build_seunet(T.resolve_params({**TINY, "heads": "2-head"}))
    priors = T.init_output_priors(model, data)
    ds = CanonicalDataset(dataset)
    nuc = np.mean([ds.masks(n, "nucleus").any(0).mean() for n in ds.names])
    assert priors["nucleus"] == pytest.approx(nuc)
    bias = float(model.decoders["nucleus"].out.bias)
    assert bias == pytest.approx(math.log(nuc / (1 - nuc)), rel=1e-5)
    assert priors["cytoplasm"] > priors["nucleus"]


def test_missing_map_file_is_a_clear_error(dataset, tmp_path):
    with pytest.raises(DataError, match="img0.npz"):
        T.SemanticData([DataRef(dataset, ["img0"], maps=tmp_path)], ("cytoplasm", "overlap"), "v1")


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_training_is_deterministic_and_resumes_exactly(dataset, tmp_path):
    params = {**TINY, "heads": "2-head", "overlap": True}
    a = fit([DataRef(dataset)], None, tmp_path / "a", params, 5, "v4")
    b = fit([DataRef(dataset)], None, tmp_path / "b", params, 5, "v4")
    assert a.read_bytes() == b.read_bytes()
    # interrupted after 2 iterations (checkpoint), then continued to 4
    fit([DataRef(dataset)], None, tmp_path / "c", {**params, "iterations": 2}, 5, "v4")
    assert (tmp_path / "c" / "checkpoints" / "last.pt").is_file()
    c = fit([DataRef(dataset)], None, tmp_path / "c", params, 5, "v4")
    timing = json.loads((tmp_path / "c" / "timing.json").read_text())
    assert timing["iterations_run"] == 2  # really resumed, not retrained from scratch
    sa, sc = _state(a), _state(c)
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    log_a = (tmp_path / "a" / "log.csv").read_text()
    assert log_a == (tmp_path / "c" / "log.csv").read_text()
    assert log_a.splitlines()[0] == "iteration,loss_cytoplasm,loss_nucleus,loss_overlap,loss,lr"
    assert len(log_a.splitlines()) == 1 + 4
    # another seed gives another model
    d = fit([DataRef(dataset)], None, tmp_path / "d", params, 6, "v4")
    assert any(not torch.equal(sa[k], v) for k, v in _state(d).items())


def test_nan_loss_names_experiment_and_iteration(dataset, tmp_path, monkeypatch):
    def nan_loss(logits, targets, prob_map, heads, params):
        value = logits.sum() * float("nan")
        return value, {"cytoplasm": value}
    monkeypatch.setattr(T, "semantic_loss", nan_loss)
    out = tmp_path / "exp_nan"
    with pytest.raises(FloatingPointError, match=r"exp_nan.*iteration 1"):
        fit([DataRef(dataset)], None, out, {**TINY, "heads": "base"}, 0)
    assert not (out / "model.pt").exists()


def test_predict_writes_semantic_maps_and_coco_instances(dataset, tmp_path):
    params = {**TINY, "heads": "4-head", "overlap": True, "iterations": 2}
    fit([DataRef(dataset, ["img0", "img1"])], DataRef(dataset, ["img2"]), tmp_path / "m", params, 0)
    log = (tmp_path / "m" / "log.csv").read_text().splitlines()
    assert "val_f1_nucleus" in log[0] and len(log) == 3
    assert json.loads((tmp_path / "m" / "timing.json").read_text())["iterations_run"] == 2
    out_json, sem = tmp_path / "pred.json", tmp_path / "sem"
    predict_data(tmp_path / "m", DataRef(dataset, ["img2", "img3"]), out_json, sem,
                 {**params, "thresholds": {"cytoplasm": 0.0}}, "cpu")
    for name in ("img2", "img3"):
        with np.load(sem / f"{name}.npz") as npz:
            assert sorted(npz.files) == ["background", "border", "cytoplasm", "nucleus", "overlap"]
            for key in npz.files:
                assert npz[key].dtype == np.uint8 and npz[key].shape == (48, 48)
                assert set(np.unique(npz[key])) <= {0, 1}
            assert npz["cytoplasm"].all()  # threshold 0 -> everything foreground
    results = json.loads(out_json.read_text())
    ds = CanonicalDataset(dataset)
    ids = {ds.images["img2"]["id"], ds.images["img3"]["id"]}
    cells = [r for r in results if r["category_id"] == 1]
    assert {r["image_id"] for r in cells} == ids  # whole image foreground -> >= 1 cell each
    for r in results:
        assert r["image_id"] in ids and r["category_id"] in (1, 2) and 0 <= r["score"] <= 1
        assert decode_segmentation(r["segmentation"], 48, 48).any()


def test_predict_rejects_missing_model(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        predict_data(tmp_path / "none", DataRef(dataset), tmp_path / "p.json", tmp_path / "s", {}, "cpu")

"""The inputs block reaches training: source mix, real-image pools, data in the fingerprint;
and loop guarantees the contract tests do not reach (final checkpoint off the checkpoint
grid, any worker count gives the same model)."""
import json

import numpy as np
import pytest
import torch

from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.train.api import build_inputs
from overlapseg.train.base import DataRef, TrainInputs, draw_items, load_trainers


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def write(root, n_cells_per_image, gap):
    """Images with ``n`` cells each; ``gap`` (one, or one per image) < 0 makes neighbours overlap."""
    samples = []
    gaps = gap if isinstance(gap, (list, tuple)) else [gap] * len(n_cells_per_image)
    for i, (n, gap) in enumerate(zip(n_cells_per_image, gaps)):
        shape = (48, 96)
        image = np.full(shape, 220, np.uint8)
        instances = []
        for k in range(n):
            cell = disc(shape, 24, 12 + k * (20 + gap), 10)
            image[cell] -= 40
            instances.append(Instance(cell, "cytoplasm"))
        samples.append(Sample(f"img{i}", image, instances))
    return write_canonical_dataset(samples, root)


@pytest.fixture
def clustered(tmp_path):
    """img0, img1: two separate cells (discrete); img2, img3: four overlapping ones."""
    data = write(tmp_path / "data", [2, 2, 4, 4], gap=[10, 10, -8, -8])
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["img0", "img1", "img2", "img3"], "val": [], "test": []}))
    return data, splits


def test_mix_weights_sources():
    rng = np.random.default_rng(0)
    picks = np.array([draw_items(rng, 12, [10, 2], [1.0, 3.0]) for _ in range(4000)])
    assert abs((picks >= 10).mean() - 0.75) < 0.03  # source 2 drawn 3x as often, 2 images only
    assert set(picks[picks >= 10]) == {10, 11}
    batch = draw_items(rng, 12, [10, 2], [1.0, 3.0], k=4)
    assert len(set(batch.tolist())) == 4


def test_no_mix_is_uniform_and_unchanged():
    a = [draw_items(np.random.default_rng(5), 7) for _ in range(3)]
    assert a == [int(np.random.default_rng(5).integers(7))] * 3
    b = draw_items(np.random.default_rng(5), 7, k=3)
    assert (b == np.random.default_rng(5).choice(7, size=3, replace=False)).all()


def test_mix_must_match_the_sources():
    with pytest.raises(ValueError, match="2 weights"):
        draw_items(np.random.default_rng(0), 5, [5], [1.0, 1.0])


def test_maskrcnn_batches_follow_the_mix(tmp_path):
    """Two sources, all weight on the second: every sampled image comes from it."""
    a = write(tmp_path / "a", [1, 1, 1], gap=10)
    b = write(tmp_path / "b", [3], gap=10)
    klass = load_trainers()["maskrcnn"]
    inputs = TrainInputs([DataRef(a, None, None, "original"), DataRef(b, None, None, "other")],
                         mix=[1e-9, 1.0])
    trainer = klass({**klass.SMOKE_PARAMS, "batch_size": 1}, 0, "cpu", inputs)
    data = trainer.load_data(inputs.train)
    assert data.source_sizes == [3, 1]
    for it in range(20):
        images, targets = trainer.sample_batch(data, np.random.default_rng(it))
        assert len(targets[0]["labels"]) == 3


@pytest.mark.parametrize("pool, names", [("all", ["img0", "img1", "img2", "img3"]),
                                         ("discrete", ["img0", "img1"]),
                                         ("aggregated", ["img2", "img3"])])
def test_pool_keeps_discrete_or_aggregated_real_images(clustered, pool, names):
    data, splits = clustered
    inputs = build_inputs(data, splits, pool=pool,
                          pool_options={"max_cells_discrete": 3, "max_overlap_ratio": 0.1})
    assert inputs.train[0].names == names
    assert inputs.describe().get("pool", "all") == pool


def test_empty_pool_is_an_error(clustered, tmp_path):
    data, splits = clustered
    splits.write_text(json.dumps({"train": ["img0"], "val": [], "test": []}))
    with pytest.raises(ValueError, match="no aggregated images in the train split"):
        build_inputs(data, splits, pool="aggregated")


def test_fingerprint_covers_the_training_data(clustered):
    """A checkpoint trained on another split or other data bytes is not resumed."""
    data, splits = clustered
    klass = load_trainers()["seunet"]

    def fingerprint(names):
        return klass(klass.SMOKE_PARAMS, 0, "cpu", TrainInputs([DataRef(data, names)])).fingerprint()

    first = fingerprint(["img0", "img1"])
    assert fingerprint(["img0", "img1"]) == first
    assert fingerprint(["img0", "img2"]) != first
    image = next((data / "images").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")
    assert fingerprint(["img0", "img1"]) != first


def test_final_checkpoint_off_the_grid_lets_iterations_grow(clustered, tmp_path):
    """iterations not a multiple of checkpoint_every: the end still checkpoints, and a larger
    iterations continues from there to the bytes of an uninterrupted run."""
    data, _ = clustered
    klass = load_trainers()["seunet"]
    inputs = TrainInputs([DataRef(data, ["img0", "img2"])])

    def run(out, iterations):
        params = {**klass.SMOKE_PARAMS, "iterations": iterations, "checkpoint_every": 2, "threads": 1}
        return klass(params, 0, "cpu", inputs).train(out)

    run(tmp_path / "grown", 3)
    grown = run(tmp_path / "grown", 5)
    assert json.loads((tmp_path / "grown" / "timing.json").read_text())["iterations_run"] == 2
    assert grown.read_bytes() == run(tmp_path / "straight", 5).read_bytes()


def test_worker_count_does_not_change_the_model(clustered, tmp_path):
    data, _ = clustered
    klass = load_trainers()["maskrcnn"]
    inputs = TrainInputs([DataRef(data, ["img0", "img2", "img3"])])
    models = []
    for workers in (0, 2):
        params = {**klass.SMOKE_PARAMS, "iterations": 2, "checkpoint_every": 2, "threads": 1,
                  "workers": workers}
        out = klass(params, 0, "cpu", inputs).train(tmp_path / f"w{workers}")
        models.append(torch.load(out, map_location="cpu", weights_only=False)["state_dict"])
    assert models[0].keys() == models[1].keys()
    for key in models[0]:  # bitwise: the params differ only in `workers`
        assert torch.equal(models[0][key], models[1][key]), key


def test_overlap_and_error_analysis_presets_read_nested_metrics():
    from overlapseg.report.tables import metrics_table, to_csv

    def run(ap_low, ap_high, n_pred=5):
        return {"cytoplasm": {"n_pred": n_pred, "AP": 0.5, "AP50": 0.8, "AP75": 0.4,
                              "by_overlap": {"[0,0.1)": {"AP": ap_low, "AJI": 0.7, "n": 3},
                                             "[0.1,1]": {"AP": ap_high, "AJI": 0.6, "n": 2}},
                              "error_analysis": {"w_gt_mask": {"AP": 0.9, "AP50": 0.95, "AP75": 0.9},
                                                 "gt_matched": {"AP": 0.6, "AP50": 0.9, "AP75": 0.5}}}}

    t = metrics_table([run(0.5, 0.2), run(0.4, 0.3)], ["a", "b"], "overlap")
    header, row_a, row_b = to_csv(t).splitlines()[:3]
    assert "cytoplasm [0.1,1]/AP" in header and "cytoplasm [0,0.1)/AJI" in header
    assert "best_IoU" not in header  # no run records it: column dropped
    assert row_a.split(",")[1:3] == ["50.0", "70.0"] and row_b.split(",")[3] == "30.0"
    t = metrics_table([run(0.5, 0.2), run(0.5, 0.2, n_pred=0)], ["a", "b"], "error_analysis")
    header, row_a, row_b = to_csv(t).splitlines()[:3]
    assert header.split(",")[1:5] == ["cytoplasm/AP", "cytoplasm/AP50", "cytoplasm/AP75",
                                      "cytoplasm w_gt_mask/AP"]
    assert row_a.split(",")[4] == "90.0" and row_b.split(",")[4] == "\u2014"  # n_pred 0: not predicted


def test_a_code_change_is_not_resumed(clustered, monkeypatch):
    """The fingerprint covers the package's code: a forced retrain after an edit starts anew."""
    from overlapseg.train import base

    data, _ = clustered
    klass = load_trainers()["seunet"]

    def fingerprint():
        return klass(klass.SMOKE_PARAMS, 0, "cpu", TrainInputs([DataRef(data, ["img0"])])).fingerprint()

    before = fingerprint()
    assert fingerprint() == before
    monkeypatch.setattr(base, "_CODE_DIGEST", "edited")
    assert fingerprint() != before


def test_an_image_without_instances_is_a_valid_detection_target():
    """Generated images may hold no instance; Mask R-CNN trains on them as negatives."""
    from overlapseg.train.maskrcnn import to_target

    target = to_target(np.zeros((0, 32, 40), bool), np.zeros(0, np.int64))
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 32, 40)
    target = to_target(np.stack([disc((32, 40), 10, 10, 4), np.zeros((32, 40), bool)]), np.array([1, 2]))
    assert target["boxes"].tolist() == [[6.0, 6.0, 15.0, 15.0]] and target["labels"].tolist() == [1]


def test_detections_per_image_reaches_every_mask_rcnn_family_model():
    """The cap on kept detections (each one runs the mask heads at inference) is a model param."""
    from overlapseg.train.base import get_trainer

    for name in ("maskrcnn", "irnet", "donet"):
        klass = get_trainer(name)
        trainer = klass({**klass.SMOKE_PARAMS, "detections_per_image": 7}, 0, "cpu")
        model = trainer.build_model()
        heads = [m for m in model.modules() if hasattr(m, "detections_per_img")]
        assert heads and all(h.detections_per_img == 7 for h in heads), name

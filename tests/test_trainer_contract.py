"""The contract every registered trainer keeps (new trainers get these tests by registering).

One-step training, exact resume after an interruption, the non-finite-loss error, the
prediction format, and byte-identical model files and metrics on rerun.
"""
import json

import numpy as np
import pytest
import torch

from overlapseg.data.canonical import (CanonicalDataset, Instance, Sample, decode_segmentation,
                                       write_canonical_dataset)
from overlapseg.data.semantic import SEMANTIC_CLASSES
from overlapseg.evaluate.evaluator import evaluate
from overlapseg.train import base
from overlapseg.train.api import predict_data
from overlapseg.train.base import MODEL_FORMAT, DataRef, TrainInputs, load_trainers

TRAINERS = sorted(load_trainers())
INSTANCE_TRAINERS = [n for n in TRAINERS if load_trainers()[n].PRODUCES_INSTANCES]
GENERATORS = [n for n in TRAINERS if not load_trainers()[n].PRODUCES_INSTANCES]


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four 48x48 images, each with two overlapping cells and their nuclei."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        shape = (48, 48)
        image = np.full(shape, 220, np.uint8)
        instances = []
        cy, cx = rng.integers(18, 26, 2)
        for dx in (-7, 7):
            cell, nucleus = disc(shape, cy, cx + dx, 11), disc(shape, cy, cx + dx, 3)
            image[cell] -= 50
            image[nucleus] -= 60
            instances.append(Instance(cell, "cytoplasm"))
            instances.append(Instance(nucleus, "nucleus", len(instances) - 1))
        samples.append(Sample(f"img{i}", image, instances))
    return write_canonical_dataset(samples, tmp_path_factory.mktemp("contract") / "data")


def make(name, dataset, **extra):
    klass = load_trainers()[name]
    params = {**klass.SMOKE_PARAMS, "iterations": 2, "checkpoint_every": 1, "threads": 1, **extra}
    inputs = TrainInputs([DataRef(dataset, ["img0", "img1", "img2"])], DataRef(dataset, ["img3"]))
    return klass(params, 3, "cpu", inputs)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """Each trainer trained twice from scratch into separate folders."""
    root = tmp_path_factory.mktemp("trained")
    return {name: (make(name, dataset).train(root / name / "a"),
                   make(name, dataset).train(root / name / "b")) for name in TRAINERS}


def test_registry_matches_schema_enums():
    import yaml

    schema = yaml.safe_load(open("workflow/schemas/config.schema.yaml"))["properties"]
    enum = schema["experiments"]["additionalProperties"]["properties"]["model"]["enum"]
    assert sorted(enum) == INSTANCE_TRAINERS
    gan_enum = schema["gan"]["additionalProperties"]["properties"]["model"]["enum"]
    assert sorted(gan_enum) == GENERATORS


@pytest.mark.parametrize("name", TRAINERS)
def test_every_trainer_declares_smoke_params(name):
    klass = load_trainers()[name]
    assert klass.SMOKE_PARAMS, f"{name}: SMOKE_PARAMS (tiny params for the contract tests) missing"
    klass.resolve_params(klass.SMOKE_PARAMS)


@pytest.mark.parametrize("name", TRAINERS)
def test_model_file_layout_and_bytes_identical_on_rerun(name, trained):
    a, b = trained[name]
    assert a.read_bytes() == b.read_bytes()
    state = torch.load(a, map_location="cpu", weights_only=False)
    assert {"format", "trainer", "params", "state_dict", "seed"} <= set(state)
    assert state["format"] == MODEL_FORMAT and state["trainer"] == name and state["seed"] == 3
    log = (a.parent / "log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,") and [r.split(",")[0] for r in log[1:]] == ["1", "2"]


@pytest.mark.parametrize("name", TRAINERS)
def test_resume_after_interruption_is_byte_identical(name, dataset, trained, tmp_path, monkeypatch):
    original = base.Trainer._save_checkpoint

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(base.Trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        make(name, dataset).train(tmp_path / name)
    assert not (tmp_path / name / "model.pt").exists()
    monkeypatch.setattr(base.Trainer, "_save_checkpoint", original)
    resumed = make(name, dataset).train(tmp_path / name)
    assert json.loads((tmp_path / name / "timing.json").read_text())["iterations_run"] == 1
    a, _ = trained[name]
    assert resumed.read_bytes() == a.read_bytes()
    assert (tmp_path / name / "log.csv").read_text() == (a.parent / "log.csv").read_text()


@pytest.mark.parametrize("name", TRAINERS)
def test_non_finite_loss_names_experiment_and_iteration(name, dataset, tmp_path, monkeypatch):
    klass = load_trainers()[name]
    for method in klass.LOSS_METHODS:  # every method that returns losses gets NaN
        real = getattr(klass, method)

        def nan_losses(self, *args, _real=real):
            return {k: v * float("nan") for k, v in _real(self, *args).items()}

        monkeypatch.setattr(klass, method, nan_losses)
    out = tmp_path / "exp_nan"
    with pytest.raises(FloatingPointError, match=r"'exp_nan'.*iteration 1"):
        make(name, dataset).train(out)
    assert not (out / "model.pt").exists() and not (out / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("name", INSTANCE_TRAINERS)
def test_predict_format_and_identical_metrics(name, dataset, trained, tmp_path):
    ds = CanonicalDataset(dataset)
    for run, model_file in zip("ab", trained[name]):
        predict_data(model_file.parent, DataRef(dataset), tmp_path / f"{run}.json",
                     tmp_path / f"sem_{run}", None, "cpu", expected=name)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    results = json.loads((tmp_path / "a.json").read_text())
    ids = {ds.images[n]["id"] for n in ds.names}
    for r in results:
        assert r["image_id"] in ids and r["category_id"] in (1, 2) and 0 <= r["score"] <= 1
        assert decode_segmentation(r["segmentation"], 48, 48).any()
    for image in ds.names:
        for run in "ab":
            with np.load(tmp_path / f"sem_{run}" / f"{image}.npz") as npz:
                assert npz.files and set(npz.files) <= set(SEMANTIC_CLASSES)
                for key in npz.files:
                    assert npz[key].dtype == np.uint8 and npz[key].shape == (48, 48)
    gt = ds.annotation_file
    m = [evaluate(gt, tmp_path / f"{run}.json", semantic_dir=tmp_path / f"sem_{run}") for run in "ab"]
    assert json.dumps(m[0], sort_keys=True, default=str) == json.dumps(m[1], sort_keys=True, default=str)


@pytest.mark.parametrize("name", GENERATORS)
def test_synthesis_keeps_layout_masks_and_is_identical_on_rerun(name, dataset, trained, tmp_path):
    from overlapseg.train.gan import gan_synthesize

    copypaste = {"n_cells": [1, 2], "overlap": [0.0, 0.3], "max_source_overlap": 0.6}
    outs = [gan_synthesize(model_file.parent, dataset, ["img0", "img1"], tmp_path / run / "gen", 2, 5,
                           copypaste) for run, model_file in zip("ab", trained[name])]
    a, b = (CanonicalDataset(o) for o in outs)
    assert a.names == b.names and len(a.names) == 2
    for n in a.names:
        assert np.array_equal(a.load_image(n), b.load_image(n))
        for category in ("cytoplasm", "nucleus"):
            got, again = a.masks(n, category), b.masks(n, category)
            assert len(got) == len(again) and all(np.array_equal(g, w) for g, w in zip(got, again))
            assert all(m.shape == (48, 48) and m.any() for m in got)
    if not getattr(load_trainers()[name], "USES_COPYPASTE_LAYOUTS", True):
        return  # own layouts (coarse-to-fine and its baselines): tests/test_coarse_to_fine_trainer.py
    # the masks are those of the copy-paste layouts drawn with the same seed
    from overlapseg.synth.copypaste import config_from_params, generate_copypaste, load_sources

    cfg = config_from_params({**copypaste, "output": "additive"
                              if load_trainers()[name]({}).params.get("condition") == "composite"
                              else "intensity"})
    layouts = list(generate_copypaste(load_sources(dataset, ["img0", "img1"], cfg), 2, 5, cfg,
                                      prefix=outs[0].name))
    for layout in layouts:
        for category in ("cytoplasm", "nucleus"):
            want = [x.mask for x in layout.instances if x.category == category]
            got = a.masks(layout.name, category)
            assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_honour_amp_grad_clip_and_accumulate(name, dataset, monkeypatch):
    """Every GAN trainer runs the one update of overlapseg.gan with the Trainer's policies: its
    forward passes under the Trainer's autocast, gradients clipped to ``grad_clip`` per
    optimiser, and ``accumulate`` micro-batches giving ONE step of every optimiser."""
    trainer = make(name, dataset, grad_clip=1e-4, accumulate=2)
    torch.manual_seed(0)
    data = trainer.load_data(trainer.inputs.train)
    model = trainer.build_model()
    model.train()
    optimizers = trainer.configure_optimizers(model)
    entered = []
    autocast = trainer.autocast
    monkeypatch.setattr(trainer, "autocast", lambda: entered.append(1) or autocast())
    rng = np.random.default_rng(0)
    micro_batches = [trainer.sample_batch(data, rng) for _ in range(int(trainer.params["accumulate"]))]
    losses = trainer.training_step(model, micro_batches, optimizers, torch.amp.GradScaler("cuda", enabled=False), 0)
    assert entered and torch.isfinite(losses["loss"])
    for key, opt in optimizers.items():
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        assert params, key
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        assert float(norm) <= 1e-4 * 1.0001, key
        assert {int(opt.state[p]["step"]) for p in params} == {1}, key  # one step per iteration


@pytest.mark.parametrize("name", GENERATORS)
def test_one_generator_serves_sets_of_any_size(name, dataset, trained, tmp_path):
    """Image i of a synthetic set depends on (seed, i) and the model only, so two generator
    entries sharing one trained model (issue 28: copy-paste + pix2pix 100 and 1000) need one
    training run: the smaller set is the start of the larger."""
    from overlapseg.train.gan import gan_synthesize

    copypaste = {"n_cells": [1, 2], "overlap": [0.0, 0.3], "max_source_overlap": 0.6}
    model_dir = trained[name][0].parent
    small, large = (CanonicalDataset(gan_synthesize(model_dir, dataset, ["img0", "img1"],
                                                    tmp_path / f"n{n}" / "gen", n, 5, copypaste,
                                                    prefix="gen")) for n in (1, 3))
    assert small.names == large.names[:1] and len(large.names) == 3
    assert np.array_equal(small.load_image(small.names[0]), large.load_image(large.names[0]))
    got, want = small.masks(small.names[0]), large.masks(large.names[0])
    assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))

"""Initialisation as an audited choice (``init`` param): ImageNet/torchvision ResNet files with
FrozenBN, warm starts from another experiment, fingerprints, and the shared optimiser recipe
(``bias_lr_factor``, ``warmup_factor``). No internet: weights are seeded random ResNets saved
in torchvision's format under torchvision's file names."""
from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter

from overlapseg.cli import build_parser, main
from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
from overlapseg.models import weights
from overlapseg.models.donet import ABLATIONS
from overlapseg.provenance import model_record
from overlapseg.report.audit import format_init
from overlapseg.train.base import DataRef, Trainer, TrainInputs
from overlapseg.train.donet import DoNetTrainer
from overlapseg.train.irnet import IRNetTrainer
from overlapseg.train.maskrcnn import MaskRCNNTrainer
from overlapseg.train.seunet import SEUNetTrainer
from overlapseg.utils.io import sha256_file

torch.set_num_threads(1)

SMALL = {**MaskRCNNTrainer.SMOKE_PARAMS, "threads": 1}


def random_resnet_state(arch: str, seed: int = 0) -> dict:
    """A torchvision ResNet state dict with seeded random weights *and* BN statistics (random
    init leaves BN at mean 0 / var 1 / identity affine, which would test nothing)."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None)
    g = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
            m.num_batches_tracked.fill_(7)
    return net.state_dict()


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """An empty workflow directory and torch hub cache (never the user's)."""
    monkeypatch.chdir(tmp_path)
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path
    torch.hub.set_dir(before)


def inputs(init_file=None, root=Path("no-data")) -> TrainInputs:
    return TrainInputs([DataRef(root)], init_file=init_file)


# ----------------------------------------------------------------------------- ImageNet files
def test_torchvision_file_names():
    assert weights.imagenet_weights_file("resnet50") == "resnet50-0676ba61.pth"
    assert weights.imagenet_weights_file("resnet18") == "resnet18-f37072fd.pth"
    with pytest.raises(ValueError, match="depth 19"):
        weights.resnet_arch(19)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_backbone_features_bitwise_equal_torchvision(workdir, arch):
    state = random_resnet_state(arch)
    folder = workdir / "resources" / "weights"
    folder.mkdir(parents=True)
    torch.save(state, folder / weights.imagenet_weights_file(arch))
    trainer = MaskRCNNTrainer({**SMALL, "depth": int(arch[6:]), "init": "imagenet"}, 0, "cpu", inputs())
    model = trainer.build_model()
    trainer.apply_init(model)
    init = trainer.resolved_init()
    assert init["kind"] == "imagenet" and init["frozen_bn"] and init["loaded"] > 0
    assert init["sha256"] == sha256_file(folder / weights.imagenet_weights_file(arch))
    assert model.transform.image_mean == weights.IMAGENET_MEAN
    assert model.transform.image_std == weights.IMAGENET_STD

    reference = getattr(torchvision.models, arch)(weights=None)
    reference.load_state_dict(state)
    reference.eval()
    layers = {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = IntermediateLayerGetter(reference, layers)(x)
        model.train()  # FrozenBN ignores the mode: training-mode features are the pretrained ones
        got = trainer.backbone_body(model)(x)
    assert list(got) == ["0", "1", "2", "3"]
    for (name, e), g in zip(expected.items(), got.values()):
        assert torch.equal(e, g), name


def test_missing_wrong_or_truncated_weights_fail_naming_the_file(workdir):
    trainer = MaskRCNNTrainer({**SMALL, "depth": 50, "init": "imagenet"}, 0, "cpu", inputs())
    with pytest.raises(FileNotFoundError, match=r"resnet50-0676ba61\.pth is in neither resources/weights/.*"
                                                r"overlapseg weights fetch --arch resnet50"):
        trainer.resolved_init()

    good = workdir / "r18.pth"
    torch.save(random_resnet_state("resnet18"), good)
    truncated = workdir / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_a_dict = workdir / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    cases = [(truncated, 18, r"truncated\.pth: unreadable weights file"),
             (not_a_dict, 18, r"list\.pth: not a state dict"),
             (good, 50, r"r18\.pth: not a torchvision resnet50 state dict")]  # another depth
    for path, depth, message in cases:
        t = MaskRCNNTrainer({**SMALL, "depth": depth, "init": {"file": str(path)}}, 0, "cpu", inputs())
        with pytest.raises(ValueError, match=message):
            t.apply_init(t.build_model())
    bad_shapes = {k: (v[..., :1] if k == "layer1.0.conv1.weight" else v)
                  for k, v in random_resnet_state("resnet18").items()}
    torch.save(bad_shapes, workdir / "shapes.pth")
    t = MaskRCNNTrainer({**SMALL, "init": {"file": "shapes.pth"}}, 0, "cpu", inputs())
    with pytest.raises(ValueError, match=r"shapes\.pth: .*layer1\.0\.conv1\.weight has shape"):
        t.apply_init(t.build_model())


def test_resolved_init_sha256_is_in_the_fingerprint(workdir):
    path = workdir / "w.pth"
    torch.save(random_resnet_state("resnet18", seed=0), path)

    def fingerprint(init) -> str:
        return MaskRCNNTrainer({**SMALL, "init": init}, 0, "cpu", inputs()).fingerprint()

    first = fingerprint({"file": "w.pth"})
    assert fingerprint({"file": "w.pth"}) == first
    torch.save(random_resnet_state("resnet18", seed=1), path)  # same name and param, other bytes
    assert fingerprint({"file": "w.pth"}) != first
    assert fingerprint("scratch") not in (first, fingerprint({"file": "w.pth"}))


def test_fetch_finds_checks_and_fails_offline_in_one_line(workdir, monkeypatch, capsys):
    out = workdir / "resources" / "weights"
    name = weights.imagenet_weights_file("resnet18")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["weights", "fetch", "--arch", "resnet18", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{out / name}: not found" in err and f"put {name} into {out}/" in err

    # found in the torch hub cache: hash-checked (torch.hub's name prefix), copied to --out
    payload = workdir / "payload.pth"
    torch.save(random_resnet_state("resnet18"), payload)
    real = f"resnet18-{sha256_file(payload)[:8]}.pth"
    monkeypatch.setattr(weights, "imagenet_weights_file", lambda arch: real)
    (workdir / "hub" / "checkpoints").mkdir(parents=True)
    payload.rename(workdir / "hub" / "checkpoints" / real)
    assert weights.fetch_imagenet_weights("resnet18", out) == out / real
    assert sha256_file(out / real) == sha256_file(workdir / "hub" / "checkpoints" / real)
    assert weights.find_imagenet_weights("resnet18", out) == out / real

    # a wrong (or truncated) file under the expected name fails naming it
    (out / real).write_bytes(b"truncated")
    with pytest.raises(ValueError, match=rf"{real}: sha256 does not start with"):
        weights.fetch_imagenet_weights("resnet18", out)


# ----------------------------------------------------------------------------- warm start
def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    samples = []
    for i in range(3):
        image = np.full((48, 48), 220, np.uint8)
        instances = []
        for dx in (-7, 7):
            cell, nucleus = disc((48, 48), 22 + i, 24 + dx, 11), disc((48, 48), 22 + i, 24 + dx, 3)
            image[cell] -= 50
            image[nucleus] -= 60
            instances.append(Instance(cell, "cytoplasm"))
            instances.append(Instance(nucleus, "nucleus", len(instances) - 1))
        samples.append(Sample(f"img{i}", image, instances))
    return write_canonical_dataset(samples, tmp_path_factory.mktemp("init") / "data")


def test_warm_start_from_another_experiment(dataset, tmp_path):
    # the source: a Mask R-CNN started from a (random stand-in for) torchvision ResNet-18 file
    resnet = tmp_path / "resnet18.pth"
    torch.save(random_resnet_state("resnet18"), resnet)
    src_params = {**SMALL, "iterations": 2, "checkpoint_every": 2, "init": {"file": str(resnet)}}
    src_model = MaskRCNNTrainer(src_params, 0, "cpu", TrainInputs([DataRef(dataset)])).train(tmp_path / "src")
    source = torch.load(src_model, weights_only=False)
    assert source["init"]["kind"] == "file" and source["init"]["sha256"] == sha256_file(resnet)
    # the frozen stem still holds the file's weights after training
    assert torch.equal(source["state_dict"]["backbone.body.conv1.weight"],
                       torch.load(resnet, weights_only=True)["conv1.weight"])

    # without the source's model.pt there is nothing to start from: one clear line
    params = {**SMALL, **ABLATIONS["drm"], "iterations": 1, "checkpoint_every": 1,
              "init": {"from": "src", "part": "backbone"}}
    with pytest.raises(ValueError, match="needs experiment 'src''s model.pt as the init file"):
        DoNetTrainer(params, 0, "cpu", TrainInputs([DataRef(dataset)])).resolved_init()

    # DoNet warm-started from the Mask R-CNN's backbone (ResNet + FPN)
    trainer = DoNetTrainer(params, 0, "cpu", TrainInputs([DataRef(dataset)], init_file=src_model))
    init = trainer.resolved_init()
    assert init["frozen_bn"]  # the source's choice: FrozenBN + ImageNet normalisation
    model = trainer.build_model()
    trainer.apply_init(model)
    state = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert backbone and all(torch.equal(state[k], source["state_dict"][k]) for k in backbone)
    assert not torch.equal(state["roi_heads.box_head.fc6.weight"],
                           source["state_dict"]["roi_heads.box_head.fc6.weight"])  # not in part
    assert init["loaded"] == len(backbone) and init["skipped"] == 0
    assert model.transform.image_mean == weights.IMAGENET_MEAN

    # part all: every tensor with the same name and shape, DoNet's own heads stay random
    every = DoNetTrainer({**params, "init": {"from": "src"}}, 0, "cpu",
                         TrainInputs([DataRef(dataset)], init_file=src_model))
    full = every.build_model()
    every.apply_init(full)
    same = [k for k, v in full.state_dict().items()
            if k in source["state_dict"] and source["state_dict"][k].shape == v.shape]
    assert every.resolved_init()["loaded"] == len(same) < len(full.state_dict())
    assert torch.equal(full.state_dict()["roi_heads.box_head.fc6.weight"],
                       source["state_dict"]["roi_heads.box_head.fc6.weight"])

    # the source (its model.pt's sha256) is in the fingerprint
    copy = tmp_path / "copy" / "model.pt"
    copy.parent.mkdir()
    copy.write_bytes(src_model.read_bytes())
    fp = DoNetTrainer(params, 0, "cpu", TrainInputs([DataRef(dataset)], init_file=copy)).fingerprint()
    assert fp == DoNetTrainer(params, 0, "cpu", TrainInputs([DataRef(dataset)], init_file=src_model)).fingerprint()
    source["state_dict"]["backbone.fpn.layer_blocks.0.0.bias"] += 1
    torch.save(source, copy)
    assert fp != DoNetTrainer(params, 0, "cpu", TrainInputs([DataRef(dataset)], init_file=copy)).fingerprint()

    # trained, recorded in model.pt, audited, and loaded for inference with the FrozenBN network
    out = trainer.train(tmp_path / "dst")
    record = model_record(out)
    assert record["init"]["source"] == "src" and record["init"]["sha256"] == sha256_file(src_model)
    assert record["init"]["source_init"]["sha256"] == sha256_file(resnet)
    line = format_init(record["init"], record["params"]["init"])
    assert line.startswith("warm start from experiment src (part backbone): model.pt  sha256 "
                           + sha256_file(src_model))
    assert f"source started from file resnet18.pth sha256 {sha256_file(resnet)}" in line
    _, loaded = Trainer.load(tmp_path / "dst")
    assert any(type(m).__name__ == "FrozenBatchNorm2d" for m in loaded.modules())


def test_donet_nucleus_stage_warm_starts_from_the_source_heads(tmp_path):
    """With MRP, DoNet's second stage (nucleus RPN and RoI heads) has no namesake in a Mask
    R-CNN: the trainer's aliases start it as the source's RPN and RoI heads."""
    source = MaskRCNNTrainer(SMALL).build_model().state_dict()
    for name in source:  # distinguishable from any fresh initialisation
        if source[name].is_floating_point():
            source[name] = torch.full_like(source[name], 0.25)
    model = DoNetTrainer({**SMALL, **ABLATIONS["donet"]}).build_model()
    loaded, skipped = weights.copy_matching(model, source, ("",), DoNetTrainer.INIT_ALIASES)
    state = model.state_dict()
    nucleus = [k for k in state if k.startswith(("nucleus_rpn.", "nucleus_roi_heads."))
               and k[len("nucleus_"):] in source]  # DoNet's own heads have no namesake
    assert len(nucleus) > 10 and set(nucleus) <= set(loaded)
    for own, src in [("nucleus_rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.weight"),
                     ("nucleus_roi_heads.box_head.fc6.weight", "roi_heads.box_head.fc6.weight")]:
        assert torch.equal(state[own], source[src])
    # without aliases the nucleus stage keeps its random initialisation
    fresh = DoNetTrainer({**SMALL, **ABLATIONS["donet"]}).build_model()
    plain, _ = weights.copy_matching(fresh, source)
    assert not any(k.startswith("nucleus_") for k in plain) and not skipped


# ----------------------------------------------------------------------------- params
def test_init_param_is_checked():
    assert MaskRCNNTrainer.resolve_params({"init": {"from": "x"}})["init"] == {"from": "x", "part": "all"}
    with pytest.raises(ValueError, match=r"init='pretrained': use scratch, imagenet, \{file: PATH\}"):
        MaskRCNNTrainer.resolve_params({"init": "pretrained"})
    with pytest.raises(ValueError, match=re.escape("part must be one of all|backbone")):
        MaskRCNNTrainer.resolve_params({"init": {"from": "x", "part": "heads"}})
    with pytest.raises(ValueError, match="seunet has no ResNet backbone for ImageNet weights"):
        SEUNetTrainer.resolve_params({"init": "imagenet"})
    assert SEUNetTrainer.resolve_params({"init": {"from": "x", "part": "encoder"}})["init"]["part"] == "encoder"


def test_cli_train_takes_an_init_file():
    args = build_parser().parse_args(["train", "--model", "maskrcnn", "--data", "d", "--splits", "s",
                                      "--out", "o", "--init-file", "w/model.pt"])
    assert args.init_file == Path("w/model.pt")


# ----------------------------------------------------------------------------- optimiser recipe
def test_irnet_recipe_bias_lr_and_warmup_from_a_third():
    assert IRNetTrainer.DEFAULTS["bias_lr_factor"] == 2.0
    assert IRNetTrainer.DEFAULTS["warmup_factor"] == pytest.approx(1 / 3)
    t = IRNetTrainer({"warmup": 500, "iterations": 1000, "lr_steps": [0.8]})
    assert t.lr_factor(0) == pytest.approx(1 / 3)
    assert t.lr_factor(250) == pytest.approx(2 / 3)
    assert t.lr_factor(500) == 1.0 and t.lr_factor(800) == pytest.approx(0.1)
    # the other detectors keep today's ramp (from 1/warmup, 1 at the last warm-up iteration)
    m = MaskRCNNTrainer({"warmup": 4, "iterations": 10})
    assert [m.lr_factor(i) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_bias_lr_factor_makes_one_bias_group():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.GroupNorm(1, 2), torch.nn.Conv2d(2, 1, 1))
    net[0].weight.requires_grad_(False)
    one = MaskRCNNTrainer({"lr": 0.01}).configure_optimizers(net)["model"]
    assert len(one.param_groups) == 1 and len(one.param_groups[0]["params"]) == 5
    two = IRNetTrainer({"lr": 0.01}).configure_optimizers(net)["model"]
    weights_group, bias_group = two.param_groups
    assert bias_group["lr"] == pytest.approx(0.02) and weights_group["lr"] == pytest.approx(0.01)
    assert {id(p) for p in bias_group["params"]} == {id(net[0].bias), id(net[1].bias), id(net[2].bias)}
    assert {id(p) for p in weights_group["params"]} == {id(net[1].weight), id(net[2].weight)}
    with pytest.raises(ValueError, match="warmup_factor=0"):
        MaskRCNNTrainer({"warmup_factor": 0})
    with pytest.raises(ValueError, match="bias_lr_factor=-1"):
        MaskRCNNTrainer({"bias_lr_factor": -1})

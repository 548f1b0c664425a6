"""Issue 28: a source teaches only the categories it annotates, and the effective mix is visible.

A nuclei-only image (a coarse-to-fine / p+CycleGAN / r+p2p set) must give no gradient to the
cytoplasm outputs of any model (semantic heads, box classifier, keypoint heatmaps, SparseSEU-Net
class scores), while a fully annotated image does; the nucleus outputs still learn from it.
"""
import json

import numpy as np
import pytest
import torch

from overlapseg.data.canonical import CanonicalDataset, DataError, Instance, Sample, write_canonical_dataset
from overlapseg.data.training_sources import known_classes, mix_caption, resolve_mix
from overlapseg.train.api import build_inputs
from overlapseg.train.base import DataRef, TrainInputs, get_trainer

SHAPE = (48, 48)


def disc(cy, cx, r):
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def cell_image(with_cells: bool, n: int = 2, name: str = "img"):
    """Cells with a nucleus each; ``with_cells`` False keeps only the nuclei (same pixels)."""
    samples = []
    for i in range(n):
        image = np.full(SHAPE, 220, np.uint8)
        instances = []
        for k, (cy, cx) in enumerate([(14, 14), (30, 32)]):
            cell, nucleus = disc(cy, cx, 10), disc(cy, cx, 4)
            image[cell] -= 50
            image[nucleus] -= 80
            if with_cells:
                instances.append(Instance(cell, "cytoplasm"))
            instances.append(Instance(nucleus, "nucleus", len(instances) - 1 if with_cells else None))
        samples.append(Sample(f"{name}{i}", image, instances))
    return samples


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("scope")
    full = write_canonical_dataset(cell_image(True), root / "full")
    nuclei = write_canonical_dataset(cell_image(False, name="syn"), root / "nuclei",
                                     info={"method": "test"}, annotated=["nucleus"])
    return full, nuclei


# ----------------------------------------------------------------------------- data
def test_dataset_declares_its_annotated_categories(sources, tmp_path):
    full, nuclei = sources
    assert CanonicalDataset(full).annotated == ("cytoplasm", "nucleus")
    assert "annotated" not in CanonicalDataset(full).data["info"]  # full sets: file unchanged
    assert CanonicalDataset(nuclei).annotated == ("nucleus",)
    assert CanonicalDataset(nuclei).data["info"]["annotated"] == ["nucleus"]
    with pytest.raises(DataError, match="annotates only nucleus"):
        write_canonical_dataset(cell_image(True), tmp_path / "bad", annotated=["nucleus"])
    with pytest.raises(DataError, match="non-empty subset"):
        write_canonical_dataset(cell_image(False), tmp_path / "bad2", annotated=["nuclei"])


def test_layout_generator_sets_written_before_the_key_are_nuclei_only(tmp_path):
    path = write_canonical_dataset(cell_image(False), tmp_path / "old",
                                   info={"trainer": "coarse_to_fine", "category": "nucleus"})
    assert CanonicalDataset(path).annotated == ("nucleus",)


def test_label_image_ingest_declares_its_category():
    from overlapseg.data.adapters import isbi2014_edf, label_images

    assert label_images.annotated_categories(category="cytoplasm") == ("cytoplasm",)
    assert isbi2014_edf.annotated_categories(min_area=3) == ("nucleus",)


def test_build_inputs_reads_each_sources_scope(sources, tmp_path):
    full, nuclei = sources
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["img0", "img1"], "val": [], "test": []}))
    inputs = build_inputs(full, splits, ["original", "c2f"], [nuclei], mix=[1, 1])
    assert [r.annotated for r in inputs.train] == [("cytoplasm", "nucleus"), ("nucleus",)]
    assert inputs.describe()["annotated"] == {"c2f": ["nucleus"]}


def test_known_classes_per_head():
    heads = ("cytoplasm", "nucleus", "border", "background", "overlap")
    assert known_classes(heads, ["nucleus"]) == [False, True, False, False, False]
    assert known_classes(heads, ["cytoplasm"]) == [True, False, True, True, True]
    assert all(known_classes(heads, ["cytoplasm", "nucleus"]))


# ----------------------------------------------------------------------------- gradients
def test_seunet_nuclei_only_image_trains_the_nucleus_head_only(sources):
    from overlapseg.train.seunet import IGNORE, SemanticData

    full, nuclei = sources
    trainer = get_trainer("seunet")({**get_trainer("seunet").SMOKE_PARAMS, "heads": "4-head",
                                     "overlap": True}, 0, "cpu")
    data = SemanticData([DataRef(full), DataRef(nuclei)], trainer.heads, None)
    k_cyto = trainer.heads.index("cytoplasm")
    assert (data.items[2][1 + k_cyto] == IGNORE).all()  # nuclei-only item: cytoplasm unknown
    assert set(np.unique(data.items[2][1 + trainer.heads.index("nucleus")])) == {0.0, 1.0}
    torch.manual_seed(0)
    model = trainer.build_model()

    def head_grads(item):
        batch = torch.from_numpy(np.stack([item[:, :32, :32]]))
        model.zero_grad(set_to_none=True)
        sum(trainer.losses(model, batch).values()).backward()
        return {h: float(model.decoders[h].out.weight.grad.abs().sum()) for h in trainer.heads}

    only_nuclei = head_grads(data.items[2])
    for head in ("cytoplasm", "border", "background", "overlap"):
        assert only_nuclei[head] == 0.0, head
    assert only_nuclei["nucleus"] > 0
    annotated = head_grads(data.items[0])
    assert all(v > 0 for v in annotated.values())
    # the nucleus head learns its background too: a crop without any nucleus still trains it
    empty = data.items[2].copy()
    empty[1 + trainer.heads.index("nucleus")] = 0.0
    assert head_grads(empty)["nucleus"] > 0


def test_seunet_mixed_batch_loss_is_the_mean_over_known_pixels():
    from overlapseg.train.seunet import semantic_loss, SEUNET_DEFAULTS

    torch.manual_seed(1)
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    mixed = target.clone()
    mixed[1] = -1.0
    _, parts = semantic_loss(logits, mixed, None, ("cytoplasm",), SEUNET_DEFAULTS)
    alone = torch.nn.functional.binary_cross_entropy_with_logits(logits[:1], target[:1])
    assert torch.allclose(parts["cytoplasm"], alone)


def _target(masks, labels, annotated):
    from overlapseg.train.maskrcnn import to_target

    return to_target(np.stack(masks), np.asarray(labels, np.int64), annotated)


def _samples(nuclei_only: bool):
    masks = [disc(14, 14, 4), disc(30, 32, 4)]
    labels = [2, 2]
    if not nuclei_only:
        masks = [disc(14, 14, 10), disc(30, 32, 10)] + masks
        labels = [1, 1] + labels
    scope = ("nucleus",) if nuclei_only else ("cytoplasm", "nucleus")
    image = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(3))
    return [image, image.flip(-1)], [_target(masks, labels, scope), _target(
        [m[:, ::-1] for m in masks], labels, scope)]


@pytest.mark.parametrize("name", ["maskrcnn", "irnet", "donet"])
def test_detector_nuclei_only_image_gives_no_gradient_to_the_cytoplasm_logit(name):
    klass = get_trainer(name)
    params = {**klass.SMOKE_PARAMS, "box_batch_size_per_image": 64}
    torch.manual_seed(0)
    model = klass(params, 0, "cpu").build_model().train()
    predictor = model.roi_heads.box_predictor  # DoNet with MRP: the cytoplasm stage
    for nuclei_only, expect_zero in ((True, True), (False, False)):
        torch.manual_seed(1)
        images, targets = _samples(nuclei_only)
        model.zero_grad(set_to_none=True)
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        cyto = float(predictor.cls_score.weight.grad[1].abs().sum() + predictor.cls_score.bias.grad[1].abs())
        nucleus = float(predictor.cls_score.weight.grad[2].abs().sum())
        assert (cyto == 0.0) == expect_zero, (name, nuclei_only, cyto)
        if name != "donet":  # DoNet's first stage sees cytoplasm targets only
            assert nucleus > 0


def test_rpn_of_a_nuclei_only_batch_without_nuclei_is_zero_not_nan():
    klass = get_trainer("maskrcnn")
    torch.manual_seed(0)
    model = klass(klass.SMOKE_PARAMS, 0, "cpu").build_model().train()
    images = [torch.rand(3, *SHAPE)]
    targets = [_target([np.zeros(SHAPE, bool)], [2], ("nucleus",))]
    losses = model(images, targets)
    assert float(losses["loss_objectness"]) == 0.0 and float(losses["loss_rpn_box_reg"]) == 0.0
    assert all(torch.isfinite(v) for v in losses.values())


def test_ccnet_nuclei_only_image_gives_no_gradient_to_cytoplasm_heatmaps():
    klass = get_trainer("ccnet")
    torch.manual_seed(0)
    model = klass(klass.SMOKE_PARAMS, 0, "cpu").build_model().train()
    last = model.kd.heads[0].heatmap[-1]
    per_class = last.out_channels // 2  # class-major channels: cytoplasm first
    for nuclei_only, expect_zero in ((True, True), (False, False)):
        images, targets = _samples(nuclei_only)
        model.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()
        cyto = float(last.weight.grad[:per_class].abs().sum())
        assert (cyto == 0.0) == expect_zero
        assert float(last.weight.grad[per_class:].abs().sum()) > 0


def test_sparse_seunet_nuclei_only_image_gives_no_gradient_to_cytoplasm_scores():
    from overlapseg.models.scope import scope_tensor
    from overlapseg.models.sparse_seunet import sparse_losses, sparse_params

    p = {**sparse_params(), "overlap_head": True, "iou_objectness": False}
    torch.manual_seed(0)
    for nuclei_only, expect_zero in ((True, True), (False, False)):
        logits = torch.randn(1, 6, 2, requires_grad=True)
        masks = torch.randn(1, 6, *SHAPE, requires_grad=True)
        overlap = torch.randn(1, 1, *SHAPE, requires_grad=True)
        ms = [disc(14, 14, 4), disc(30, 32, 4)]
        labels = [2, 2]
        if not nuclei_only:
            ms, labels = [disc(14, 14, 10), disc(22, 24, 10)] + ms, [1, 1] + labels
        scope = ("nucleus",) if nuclei_only else ("cytoplasm", "nucleus")
        target = {"masks": torch.from_numpy(np.stack(ms)), "labels": torch.tensor(labels),
                  "annotated": scope_tensor(scope)}
        losses = sparse_losses({"logits": logits, "masks": masks, "overlap": overlap}, [target], p)
        sum(losses.values()).backward()
        assert (float(logits.grad[..., 0].abs().sum()) == 0.0) == expect_zero
        assert (float(overlap.grad.abs().sum()) == 0.0) == expect_zero
        assert float(logits.grad[..., 1].abs().sum()) > 0


# ----------------------------------------------------------------------------- mix
def test_resolve_mix_and_caption():
    uniform = resolve_mix(["original", "c2f"], [18, 40])
    assert uniform["rule"] == "uniform-by-image" and uniform["weights"] is None
    assert uniform["shares"] == [round(18 / 58, 6), round(40 / 58, 6)]
    weighted = resolve_mix(["original", "c2f"], [18, 40], [1, 3])
    assert weighted["rule"] == "weights" and weighted["shares"] == [0.25, 0.75]
    assert resolve_mix(["original", "c2f"], [18, 0], [1, 3])["shares"] == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 weights for 3 sources"):
        resolve_mix(["a", "b", "c"], [1, 1, 1], [1, 1])
    assert mix_caption(["original", "ccce"], [1, 1]) == "real:CCCE 1:1"
    assert mix_caption(["original", "c2f"], [0.25, 0.75]) == "real:coarse-to-fine 1:3"
    assert mix_caption(["original", "ccce"], None, [18, 40]) == "real + CCCE uniform by image (18:40 images)"
    assert mix_caption(["ccce"]) == "CCCE"
    assert mix_caption(uniform["sources"], weighted["weights"], uniform["images"]) == "real:coarse-to-fine 1:3"


@pytest.mark.parametrize("mix", [None, [1.0, 1.0]])
def test_model_file_records_the_effective_mix(sources, tmp_path, mix, caplog):
    full, nuclei = sources
    klass = get_trainer("seunet")
    inputs = TrainInputs([DataRef(full, source="original"), DataRef(nuclei, source="c2f")], mix=mix)
    trainer = klass({**klass.SMOKE_PARAMS, "heads": "2-head", "overlap": False, "iterations": 1,
                     "checkpoint_every": 1}, 0, "cpu", inputs)
    with caplog.at_level("INFO", logger="overlapseg.train.base"):
        path = trainer.train(tmp_path / "m")
    record = torch.load(path, weights_only=False)["mix"]
    assert record["sources"] == ["original", "c2f"] and record["images"] == [2, 2]
    assert record["annotated"] == [["cytoplasm", "nucleus"], ["nucleus"]]
    assert record["rule"] == ("uniform-by-image" if mix is None else "weights")
    assert record["shares"] == [0.5, 0.5]
    assert "c2f 50.0% (2 images, annotates nucleus)" in caplog.text


def test_study_table_titles_state_each_mixed_rows_mix():
    from pathlib import Path

    from overlapseg.study.config import load_study
    from overlapseg.study.plan import StudyPlan

    root = Path(__file__).resolve().parents[1]
    plan = StudyPlan(load_study([root / "config.yaml"], root))
    mixed = next(e for e in plan.runs if len(plan.inputs(e)["sources"]) > 1)
    table = next(t for t, spec in plan.tables.items() if mixed in spec["experiments"])
    title = plan.table_title("demo", f"study_{table}")
    assert title.startswith(plan.tables[table]["title"])
    assert f"{plan.label(mixed)}: {plan.mix_caption(mixed)}" in title
    n = len(plan.inputs(mixed)["sources"])
    plan.experiments[mixed].setdefault("inputs", {})["mix"] = [1] * n
    assert plan.mix_caption(mixed).endswith(" " + ":".join(["1"] * n))

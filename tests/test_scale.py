"""Native-scale inference: no fixed-size resizing, dataset scales resampled, large images tiled."""
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from overlapseg.data.canonical import CanonicalDataset, Instance, Sample, write_canonical_dataset
from overlapseg.models.maskrcnn import build_maskrcnn
from overlapseg.models.scale import tile_windows
from overlapseg.train.base import DataRef
from overlapseg.train.maskrcnn import MaskRCNNTrainer, detect_tiled


def disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_detector_input_keeps_its_pixel_scale():
    """The bug: min_size = max_size = image_size shrank a 2x larger image 2x before detection."""
    torch.manual_seed(0)
    model = build_maskrcnn(depth=18, image_size=48, fpn_channels=16, mask_head_channels=16,
                           box_head_dim=32).eval()
    image = torch.rand(3, 96, 80)
    batch, _ = model.transform([image])
    assert batch.image_sizes == [(96, 80)]
    normalised = (image - 0.5) / 0.25
    assert torch.equal(batch.tensors[0, :, :96, :80], normalised)


@pytest.mark.parametrize("size,tile,overlap", [(100, 40, 10), (97, 32, 8), (64, 64, 16), (10, 40, 5)])
def test_tiles_cover_with_overlap_and_owners_partition(size, tile, overlap):
    windows = tile_windows(size, tile, overlap)
    owned = np.zeros(size, int)
    for start, stop, own0, own1 in windows:
        assert 0 <= start <= own0 < own1 <= stop <= size and stop - start == min(tile, size)
        owned[own0:own1] += 1
    assert (owned == 1).all()
    for (s0, e0, *_), (s1, *_rest) in zip(windows, windows[1:]):
        assert e0 - s1 >= overlap


def threshold_detector(image):
    """A translation-equivariant stand-in for a detector: dark connected components."""
    labels, n = ndi.label(image < 0.5)
    masks = np.stack([labels == k for k in range(1, n + 1)]) if n else np.zeros((0,) + image.shape, bool)
    scores = np.array([0.9 - 0.01 * k for k in range(n)], np.float32)
    return masks, scores, np.ones(n, np.int64)


def _as_set(masks):
    return {m.tobytes() for m in masks}


def test_tiled_detection_equals_whole_image_without_seam_duplicates():
    shape = (150, 170)
    image = np.ones(shape, np.float32)
    for cy, cx in ((20, 20), (75, 60), (75, 85), (120, 140), (40, 110)):  # some straddle seams
        image[disc(shape, cy, cx, 9)] = 0.2
    whole, _, _ = threshold_detector(image)
    tiled, scores, labels = detect_tiled(threshold_detector, image, max_side=64, overlap=24)
    assert len(tiled) == len(whole) == 5 and _as_set(tiled) == _as_set(whole)
    assert (np.diff(scores) <= 0).all() and (labels == 1).all()


def test_padded_image_gives_the_same_instances():
    shape = (64, 64)
    image = np.ones(shape, np.float32)
    for cy, cx in ((20, 20), (40, 44)):
        image[disc(shape, cy, cx, 8)] = 0.2
    padded = np.ones((128, 128), np.float32)
    padded[:64, :64] = image
    small, _, _ = detect_tiled(threshold_detector, image, max_side=64, overlap=16)
    big, _, _ = detect_tiled(threshold_detector, padded, max_side=64, overlap=16)
    assert _as_set(m[:64, :64] for m in big) == _as_set(small)
    assert not any(m[64:].any() or m[:, 64:].any() for m in big)


def test_dataset_at_scale_half_is_resampled_to_the_training_scale(tmp_path):
    shape = (96, 96)
    image = np.full(shape, 220, np.uint8)
    cell = disc(shape, 48, 48, 20)
    image[cell] = 90
    root = write_canonical_dataset([Sample("big", image, [Instance(cell, "cytoplasm")])],
                                   tmp_path / "data", info={"scale": 0.5})
    assert CanonicalDataset(root).scale == 0.5
    trainer = MaskRCNNTrainer({"threads": 1}, 0, "cpu")
    seen = []

    def fake_predict_image(model, img, image_id):
        seen.append(img.shape)
        masks, scores, labels = threshold_detector(img)
        from overlapseg.train.maskrcnn import instance_outputs
        return instance_outputs(masks, scores, labels, image_id, trainer.params)

    trainer.predict_image = fake_predict_image
    trainer.predict(None, DataRef(root), tmp_path / "p.json", tmp_path / "sem")
    assert seen == [(48, 48)]  # shrunk by 0.5 before the model
    import json
    from overlapseg.data.canonical import decode_segmentation

    (result,) = json.loads((tmp_path / "p.json").read_text())
    mask = decode_segmentation(result["segmentation"], 96, 96)  # mapped back to the image
    inter = (mask & cell).sum()
    assert inter / (mask | cell).sum() > 0.9
    with np.load(tmp_path / "sem" / "big.npz") as npz:
        assert npz["cytoplasm"].shape == shape


def test_ingest_records_the_dataset_scale_and_rejects_bad_ones(tmp_path):
    from fixtures_isbi import write_isbi_fixture

    from overlapseg.data.ingest import ingest

    write_isbi_fixture(tmp_path / "raw", n_images=2)
    out = ingest("isbi2014", tmp_path / "raw", tmp_path / "data", scale=0.5)
    assert CanonicalDataset(out).scale == 0.5
    for bad in (0.0, float("nan"), -1.0):
        with pytest.raises(ValueError, match="scale must be a positive finite number"):
            ingest("isbi2014", tmp_path / "raw", tmp_path / f"bad{bad}", scale=bad)


def test_training_scale_survives_the_model_file(tmp_path):
    from overlapseg.train.base import TrainInputs, load_trainers

    shape = (48, 48)
    image = np.full(shape, 220, np.uint8)
    cell = disc(shape, 24, 24, 12)
    image[cell] = 90
    root = write_canonical_dataset([Sample(f"s{i}", image, [Instance(cell, "cytoplasm")]) for i in range(2)],
                                   tmp_path / "data", info={"scale": 0.5})
    klass = load_trainers()["seunet"]
    params = {**klass.SMOKE_PARAMS, "iterations": 1, "checkpoint_every": 1, "threads": 1}
    model_file = klass(params, 0, "cpu", TrainInputs([DataRef(root)])).train(tmp_path / "m")
    trainer, _ = klass.load(model_file.parent, "cpu")
    assert trainer.train_scale == 0.5

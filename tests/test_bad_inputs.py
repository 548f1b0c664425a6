"""Bad inputs of issue 11 (data, evaluation, files): each fails with one line naming the file
(or option) and the problem, or is handled as documented in docs/bad_inputs.md."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from overlapseg.cli import main
from overlapseg.data.canonical import (CanonicalDataset, DataError, Instance, Sample, decode_crop,
                                       encode_crop, encode_mask, read_image, rle_runs,
                                       segmentation_to_rle, write_canonical_dataset)
from overlapseg.data.ingest import ingest
from overlapseg.evaluate.inputs import load_inputs
from overlapseg.maps import overlap_maps
from overlapseg.utils.io import atomic_dir, atomic_path, write_json

H, W = 40, 40


def disc(cy, cx, r, shape=(H, W)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def short_rle(mask: np.ndarray) -> dict:
    """The mask's RLE with its last run dropped: runs add up to fewer than H x W pixels."""
    runs = rle_runs(encode_mask(mask)["counts"]).tolist()[:-1]
    rle = mask_utils.frPyObjects({"counts": runs, "size": list(mask.shape)}, *mask.shape)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path, annotations: list[dict], image_name: str = "a.png",
               image: np.ndarray | None = None) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    image = np.full((H, W), 120, np.uint8) if image is None else image
    cv2.imwrite(str(root / "images" / image_name), image)
    data = {"images": [{"id": 7, "file_name": image_name, "height": H, "width": W}],
            "categories": [{"id": 1, "name": "cytoplasm"}, {"id": 2, "name": "nucleus"}],
            "annotations": [{"image_id": 7, "iscrowd": 0, **a} for a in annotations]}
    (root / "instances.json").write_text(json.dumps(data))
    return root


def cell_ann(aid=10, **extra):
    return {"id": aid, "category_id": 1, "segmentation": encode_mask(disc(20, 20, 12)), **extra}


# ----------------------------------------------------------------------------- item 1: RLE
@pytest.mark.parametrize("segmentation, message", [
    (short_rle(disc(20, 20, 12)), r"RLE run lengths sum to \d+ pixels, expected 1600 \(= 40 x 40\)"),
    ({"size": [H, W], "counts": [100, 50, 100]}, r"sum to 250 pixels, expected 1600"),
    ({"size": [H, W], "counts": [1700, -100]}, r"negative run length \(-100\)"),
    ({"size": [H, W + 1], "counts": encode_mask(disc(20, 20, 12))["counts"]},
     r"RLE size \[40, 41\] does not match image size \[40, 40\]"),
    ({"size": [H, W], "counts": "6 0"}, r"characters outside"),
    ({"size": [H, W], "counts": "a"}, r"ends in the middle of a number"),
])
def test_bad_rle_rejected_before_pycocotools(segmentation, message):
    with pytest.raises(ValueError, match=message):
        segmentation_to_rle(segmentation, H, W)


def test_short_rle_fails_ingest_naming_file_and_annotation(tmp_path):
    raw = write_coco(tmp_path / "raw", [cell_ann(segmentation=short_rle(disc(20, 20, 12)))])
    with pytest.raises(DataError, match=r"instances\.json: annotation 10 \(image a\.png\): RLE run "
                                        r"lengths sum to \d+ pixels, expected 1600"):
        ingest("coco", raw, tmp_path / "data")
    assert not (tmp_path / "data").exists()


def _gt_and_preds(tmp_path: Path, gt_seg, pred_seg) -> tuple[Path, Path]:
    gt = {"images": [{"id": 1, "name": "a", "height": H, "width": W}],
          "categories": [{"id": 1, "name": "cytoplasm"}, {"id": 2, "name": "nucleus"}],
          "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": gt_seg,
                           "iscrowd": 0},
                          {"id": 6, "image_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentation": encode_mask(disc(18, 22, 10))}]}
    preds = [{"image_id": 1, "category_id": 1, "segmentation": encode_mask(disc(20, 20, 11)),
              "score": 0.9},
             {"image_id": 1, "category_id": 1, "segmentation": pred_seg, "score": 0.8}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    return tmp_path / "gt.json", tmp_path / "pred.json"


@pytest.mark.parametrize("where", ["pred", "gt"])
def test_short_rle_evaluation_fails_fast_instead_of_hanging(tmp_path, where):
    """pycocotools' rleMerge loops forever (ignoring SIGINT) on such an RLE: run the real entry
    point in a subprocess with a timeout, so a regression fails instead of hanging the suite."""
    good, bad = encode_mask(disc(20, 20, 12)), short_rle(disc(20, 20, 12))
    gt, pred = _gt_and_preds(tmp_path, bad if where == "gt" else good, bad if where == "pred" else good)
    proc = subprocess.run([sys.executable, "-m", "overlapseg.cli", "evaluate", "--gt", str(gt),
                           "--pred", str(pred), "--out", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    expected = (f"{pred}: prediction 1: RLE run lengths sum" if where == "pred"
                else f"{gt}: annotation 0 (id 5): RLE run lengths sum")
    assert line.startswith(f"overlapseg evaluate: error: {expected}"), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- item 3: images
def _encoded(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _noise(channels=3):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (64, 80, channels) if channels > 1 else (64, 80), dtype=np.uint8)


def _overwrite(data: bytes, at: int | None = None, n: int = 20, fill: int = 0) -> bytes:
    """``n`` bytes set to ``fill`` at ``at`` (default: the middle of the file)."""
    b = bytearray(data)
    at = len(b) // 2 if at is None else at
    b[at:at + n] = bytes([fill]) * n
    return bytes(b)


@pytest.mark.parametrize("name, data", [
    ("cut.jpg", _encoded(".jpg", _noise())[: len(_encoded(".jpg", _noise())) // 2]),
    ("zeros.jpg", _overwrite(_encoded(".jpg", _noise()))),  # libjpeg: "Corrupt JPEG data"
    ("cut.png", _encoded(".png", _noise())[: len(_encoded(".png", _noise())) // 2]),
    ("crc.png", _overwrite(_encoded(".png", _noise()))),
    ("cut.bmp", _encoded(".bmp", _noise())[: len(_encoded(".bmp", _noise())) // 2]),
    ("cut.tif", _encoded(".tif", _noise())[: len(_encoded(".tif", _noise())) // 2]),
    # LZW strip data (from byte 8) garbled: OpenCV decodes it anyway
    ("lzw.tif", _overwrite(_encoded(".tif", _noise()), at=8, n=200, fill=0xFF)),
])
def test_truncated_or_corrupt_images_fail_naming_file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"{name}: (unreadable image|truncated or corrupt image)"):
        read_image(path)


def test_truncated_jpeg_fails_ingest(tmp_path):
    raw = write_coco(tmp_path / "raw", [cell_ann()], image_name="a.jpg", image=_noise(1)[:H, :W])
    path = raw / "images" / "a.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"a\.jpg: truncated or corrupt image"):
        ingest("coco", raw, tmp_path / "data")
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- item 9: polygons
@pytest.mark.parametrize("polygon, points", [([[5.0, 5.0, 30.0, 30.0]], 2), ([[5.0, 5.0]], 1)])
def test_short_polygons_say_how_many_points(tmp_path, polygon, points):
    raw = write_coco(tmp_path / "raw", [cell_ann(segmentation=polygon)])
    with pytest.raises(DataError, match=rf"instances\.json: annotation 10 \(image a\.png\): polygon "
                                        rf"with {points} point\(s\) \(needs >= 3\)"):
        ingest("coco", raw, tmp_path / "data")
    gt, pred = _gt_and_preds(tmp_path, polygon, encode_mask(disc(20, 20, 12)))
    with pytest.raises(DataError, match=rf"gt\.json: annotation 0 \(id 5\): polygon with {points} "):
        load_inputs(gt, pred)


# ----------------------------------------------------------------------------- item 10: scores
@pytest.mark.parametrize("score", [1.7, -0.3, 55])
def test_scores_outside_unit_interval_rejected(tmp_path, score):
    gt, pred = _gt_and_preds(tmp_path, encode_mask(disc(20, 20, 12)), encode_mask(disc(20, 20, 12)))
    preds = json.loads(pred.read_text())
    preds[1]["score"] = score
    pred.write_text(json.dumps(preds))
    with pytest.raises(DataError, match=rf"pred\.json: prediction 1: score {score} outside \[0, 1\]"):
        load_inputs(gt, pred)


# ----------------------------------------------------------------------------- item 11: parents
@pytest.mark.parametrize("how", ["crowd", "category dropped"])
def test_parent_left_out_is_cleared_the_same_way(tmp_path, how):
    cell = cell_ann(iscrowd=1) if how == "crowd" else cell_ann(category_id=3)
    nucleus = {"id": 11, "category_id": 2, "segmentation": encode_mask(disc(20, 20, 3)),
               "parent_id": 10}
    raw = write_coco(tmp_path / "raw", [cell, nucleus])
    coco = json.loads((raw / "instances.json").read_text())
    coco["categories"].append({"id": 3, "name": "debris"})
    (raw / "instances.json").write_text(json.dumps(coco))
    ingest("coco", raw, tmp_path / "data", categories={"debris": None})
    anns = CanonicalDataset(tmp_path / "data").data["annotations"]
    assert [(a["category_id"], a["parent_id"]) for a in anns] == [(2, None)]


# ----------------------------------------------------------------------------- item 12: boxes
def test_box_cropped_masks_match_full_frame(tmp_path):
    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((23, 31)) < 0.1
        mask[:, :3] = False
        inst = Instance(mask, "cytoplasm")
        assert encode_crop(inst.crop, inst.offset, inst.shape) == encode_mask(mask)
        crop, (y0, x0) = decode_crop(encode_mask(mask), 23, 31)
        assert np.array_equal(inst.crop, crop) and (y0, x0) == inst.offset
        assert np.array_equal(inst.mask, mask)


def test_maps_use_box_crops_not_full_frame_stacks(tmp_path, monkeypatch):
    cells = [disc(20, 14, 9), disc(20, 26, 9), disc(3, 3, 2)]
    nuclei = [disc(20, 14, 2), disc(20, 26, 2)]
    inst = [Instance(c, "cytoplasm") for c in cells] + \
        [Instance(n, "nucleus", k) for k, n in enumerate(nuclei)]
    write_canonical_dataset([Sample("a", np.full((H, W), 99, np.uint8), inst)], tmp_path / "d")
    ds = CanonicalDataset(tmp_path / "d")
    expected = {v: overlap_maps.overlap_probability_map(np.stack(cells), np.stack(nuclei), v,
                                                        parents=[0, 1])
                for v in overlap_maps.VARIANTS}

    def no_stacks(*args, **kwargs):
        raise AssertionError("full-frame (N, H, W) stack built")

    monkeypatch.setattr(CanonicalDataset, "masks", no_stacks)
    for variant, ref in expected.items():
        out = overlap_maps.image_maps(ds, "a", variant)
        np.testing.assert_array_equal(out["prob"], ref)
        np.testing.assert_array_equal(out["overlap"], (np.sum(cells, 0) >= 2).astype(np.uint8))


def test_non_finite_map_parameters_fail_before_computing(tmp_path):
    write_canonical_dataset([Sample("a", np.full((H, W), 99, np.uint8),
                                    [Instance(disc(20, 20, 9), "cytoplasm")])], tmp_path / "d")
    with pytest.raises(ValueError, match="overlap_sigma must be a finite number > 0, got nan"):
        overlap_maps.write_maps(tmp_path / "d", "v2", tmp_path / "maps", overlap_sigma=float("nan"))
    assert not (tmp_path / "maps").exists()


# ----------------------------------------------------------------------------- item 13: temps
def test_stale_temps_of_the_target_are_removed(tmp_path):
    stale_file = tmp_path / ".splits.json.k2j4x_9q.json"
    stale_dir = tmp_path / ".data.ab12cd34"
    other = tmp_path / ".splits.json.bak.k2j4x_9q.json"  # another target's temp: kept
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "x.png").write_bytes(b"half")
    other.write_text("keep")
    write_json(tmp_path / "splits.json", {"train": []})
    with atomic_dir(tmp_path / "data") as tmp:
        (tmp / "f").write_text("x")
    assert not stale_file.exists() and not stale_dir.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "data", "splits.json"]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_get_umask_permissions(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


# ----------------------------------------------------------------------------- item 8: OS errors
def _tiny_dataset(tmp_path: Path) -> Path:
    samples = [Sample(f"s{i}", np.full((H, W), 99, np.uint8),
                      [Instance(disc(20, 20, 9), "cytoplasm")]) for i in range(4)]
    return write_canonical_dataset(samples, tmp_path / "data")


def test_disk_full_is_one_line_naming_the_output(tmp_path, monkeypatch, capsys):
    data = _tiny_dataset(tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "splits.json"
    assert main(["splits", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"overlapseg splits: error: {out}: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no output, no temporary


def test_torch_write_failure_names_the_output(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 0))
    target = tmp_path / "model.pt"
    with pytest.raises(OSError) as err:
        with atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
    assert (err.value.filename, err.value.strerror) == (str(target), "No space left on device")
    assert list(tmp_path.iterdir()) == []


def _permissions_enforced() -> bool:
    """False for root (euid 0 with CAP_DAC_OVERRIDE reads mode-000 files); probed rather than
    read from os.geteuid(), so a root without that capability (setpriv) runs the tests."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
            return False
        except PermissionError:
            return True


needs_permissions = pytest.mark.skipif(not _permissions_enforced(),
                                       reason="running as root: file permissions are not enforced")


@needs_permissions
@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "label-images"])
def test_unreadable_annotation_folder_says_permission_denied(tmp_path, capsys, fmt):
    """Issue 31 item 6: glob found nothing in a folder it could not read ("no *.json");
    real permissions (chmod), not a monkeypatched error."""
    raw = write_coco(tmp_path / "raw", [cell_ann()])
    raw.chmod(0)
    try:
        code = main(["ingest", "--format", fmt, "--raw", str(raw), "--out", str(tmp_path / "d")])
    finally:
        raw.chmod(0o755)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"overlapseg ingest: error: {raw}: Permission denied"]


@needs_permissions
@pytest.mark.parametrize("fmt", ["coco", "labelstudio"])
def test_unreadable_annotation_file_says_permission_denied(tmp_path, capsys, fmt):
    raw = write_coco(tmp_path / "raw", [cell_ann()])
    (raw / "instances.json").chmod(0)
    code = main(["ingest", "--format", fmt, "--raw", str(raw), "--out", str(tmp_path / "d")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"overlapseg ingest: error: {raw / 'instances.json'}: Permission denied"]


# ----------------------------------------------------------------------------- items 4, 5: CLI
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_cli_rejects_non_finite_float_options(tmp_path, capsys, value):
    code = main(["evaluate", "--gt", "g.json", "--pred", "p.json", "--out", str(tmp_path / "m.json"),
                 f"--score-threshold={value}"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"overlapseg evaluate: error: --score-threshold must be a finite number, got {float(value)!r}"]


def test_cli_misspelt_adapter_option_is_one_line(tmp_path, capsys):
    raw = write_coco(tmp_path / "raw", [cell_ann()])
    assert main(["ingest", "--format", "coco", "--raw", str(raw), "--out", str(tmp_path / "d"),
                 "--option", "skip_emtpy=true"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"overlapseg ingest: error: {raw}: adapter options: unknown option(s) "
                    "'skip_emtpy' for format 'coco' (known: annotations, images, categories, "
                    "skip_empty); did you mean 'skip_empty'?")
    assert main(["ingest", "--format", "coco", "--raw", str(raw), "--out", str(tmp_path / "d"),
                 "--option", "skip_empty=.nan"]) == 2
    assert "--option skip_empty: non-finite number" in capsys.readouterr().err

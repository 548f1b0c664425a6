import json

import numpy as np
import pytest

from overlapseg.data.canonical import (CanonicalDataset, DataError, Instance, Sample, read_image,
                                       subset_coco, write_canonical_dataset)


def disc(size, cy, cx, r):
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def sample(name="a", size=32, image=None):
    cell1, cell2 = disc(size, 12, 12, 8), disc(size, 16, 18, 8)
    nucleus = disc(size, 12, 12, 2)
    image = np.full((size, size), 200, np.uint8) if image is None else image
    return Sample(name, image, [Instance(cell1, "cytoplasm"), Instance(cell2, "cytoplasm"),
                                Instance(nucleus, "nucleus", parent=0)], source=f"test[{name}]")


def test_roundtrip_keeps_overlapping_amodal_masks(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    deep = np.random.default_rng(1).integers(0, 65535, (32, 32), dtype=np.uint16)
    written = [sample("a"), sample("b", image=rgb), sample("c", image=deep)]
    write_canonical_dataset(written, tmp_path / "ds")
    ds = CanonicalDataset(tmp_path / "ds")
    assert ds.names == ["a", "b", "c"]
    for s in written:
        back = ds.sample(s.name)
        assert np.array_equal(back.image, s.image) and back.image.dtype == s.image.dtype
        assert [i.category for i in back.instances] == ["cytoplasm", "cytoplasm", "nucleus"]
        assert back.instances[2].parent == 0
        for a, b in zip(back.instances, s.instances):
            assert np.array_equal(a.mask, b.mask)
    cells = ds.masks("a", "cytoplasm")
    assert (cells.sum(0) >= 2).any()  # the overlap survives the round trip
    coco = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cytoplasm", "nucleus"]
    nucleus = [a for a in coco["annotations"] if a["category_id"] == 2][0]
    assert coco["annotations"][nucleus["parent_id"] - 1]["category_id"] == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.instances.append(Instance(np.zeros((32, 32), bool), "cytoplasm")), "empty mask"),
    (lambda s: s.instances.append(Instance(np.ones((16, 32), bool), "cytoplasm")), "does not match image size"),
    (lambda s: s.instances.append(Instance(np.ones((32, 32), bool), "stroma")), "unknown category"),
])
def test_bad_samples_fail_and_leave_nothing(tmp_path, mutate, message):
    bad = sample("b")
    mutate(bad)
    with pytest.raises(DataError, match=message) as err:
        write_canonical_dataset([sample("a"), bad], tmp_path / "ds")
    assert "test[b]" in str(err.value)
    assert not (tmp_path / "ds").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary leftovers either


def test_duplicate_ids_rejected(tmp_path):
    with pytest.raises(DataError, match="duplicate image id"):
        write_canonical_dataset([sample("a"), sample("a")], tmp_path / "ds")


def test_unreadable_image_names_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        read_image(path)


def test_subset_keeps_ids(tmp_path):
    write_canonical_dataset([sample("a"), sample("b")], tmp_path / "ds")
    coco = CanonicalDataset(tmp_path / "ds").data
    sub = subset_coco(coco, ["b"])
    assert [i["id"] for i in sub["images"]] == [2]
    assert {a["image_id"] for a in sub["annotations"]} == {2}
    with pytest.raises(KeyError, match="zz"):
        subset_coco(coco, ["zz"])

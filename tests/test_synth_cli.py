"""The ``overlapseg maps | ccce | copypaste`` commands call the package functions."""
import json

import numpy as np

from overlapseg.cli import main
from overlapseg.data.canonical import CanonicalDataset, Instance, Sample, write_canonical_dataset


def _dataset(tmp_path):
    yy, xx = np.mgrid[:48, :48]
    samples = []
    for k, (cy, cx) in enumerate([(12, 12), (30, 34), (20, 26)]):
        cell = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        nuc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 4
        image = np.full((48, 48), 210, np.uint8)
        image[cell] = 120
        samples.append(Sample(f"s{k}", image, [Instance(cell, "cytoplasm"),
                                               Instance(nuc, "nucleus", 0)]))
    data = write_canonical_dataset(samples, tmp_path / "data")
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["s0", "s1"], "val": [],
                                                      "test": ["s2"]}))
    return data


def test_cli_commands(tmp_path, capsys):
    data = _dataset(tmp_path)
    splits = tmp_path / "splits.json"
    assert main(["maps", "--data", str(data), "--variant", "v4", "--out", str(tmp_path / "m"),
                 "--splits", str(splits)]) == 0
    assert sorted(p.name for p in (tmp_path / "m").glob("*.npz")) == ["s0.npz", "s1.npz"]
    assert main(["ccce", "--sources", str(data), "--n", "2", "--seed", "1", "--out",
                 str(tmp_path / "c"), "--mode", "absorbance", "--splits", str(splits),
                 "--option", "th=0.2", "--option", "pool=all"]) == 0
    info = json.loads((tmp_path / "c" / "annotations.json").read_text())["info"]
    assert info["params"]["mode"] == "absorbance" and info["sources"] == ["s0", "s1"]
    assert main(["copypaste", "--sources", str(data), "--n", "2", "--seed", "1", "--out",
                 str(tmp_path / "p"), "--option", "edge_sigma=4"]) == 0
    assert len(CanonicalDataset(tmp_path / "p")) == 2
    # bad input: one clear error line, exit code 2, nothing written
    assert main(["ccce", "--sources", str(data), "--n", "1", "--out", str(tmp_path / "bad"),
                 "--option", "bogus=1"]) == 2
    assert "unknown CCCE parameters" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

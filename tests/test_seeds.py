import math

import pytest

from overlapseg.evaluate.seeds import aggregate_seeds


def test_mean_and_sample_std_over_seeds_keep_the_layout():
    runs = [{"cytoplasm": {"AP": 0.5, "AJI": None, "bins": [0.1, 0.2]}, "mean": {"AP": 0.4},
             "provenance": {"id": "a"}},
            {"cytoplasm": {"AP": 0.7, "AJI": 0.3, "bins": [0.3, 0.4]}, "mean": {"AP": 0.6},
             "provenance": {"id": "b"}},
            {"cytoplasm": {"AP": 0.6, "AJI": 0.2, "bins": [0.2, 0.3]}, "mean": {"AP": 0.5},
             "provenance": {"id": "c"}}]
    agg = aggregate_seeds(runs, [0, 1, 2], ["m0.json", "m1.json", "m2.json"])
    assert agg["cytoplasm"]["AP"] == pytest.approx(0.6)
    assert agg["seed_std"]["cytoplasm"]["AP"] == pytest.approx(0.1)  # sample std (ddof 1)
    assert agg["cytoplasm"]["AJI"] is None  # undefined for one seed -> undefined
    assert agg["cytoplasm"]["bins"] == pytest.approx([0.2, 0.3])
    assert agg["seeds"] == [0, 1, 2] and agg["per_seed"] == ["m0.json", "m1.json", "m2.json"]
    assert [p["id"] for p in agg["provenance"]["seeds"]] == ["a", "b", "c"]


def test_one_seed_has_no_spread_and_mismatch_is_an_error():
    from overlapseg.report.tables import metrics_table, to_markdown

    agg = aggregate_seeds([{"mean": {"AP": 0.25}}], [7])
    assert agg["mean"]["AP"] == 0.25 and agg["seed_std"] is None
    row = to_markdown(metrics_table([agg], ["one_seed"])).splitlines()[2]
    assert "25.0" in row and "±" not in row  # no made-up "± 0.0" for a single seed
    with pytest.raises(ValueError, match="one metrics dict per seed"):
        aggregate_seeds([{"mean": {"AP": 0.1}}], [0, 1])
    assert not math.isnan(agg["mean"]["AP"])


def test_seeds_expand_into_runs_and_an_aggregate_in_the_dag(tmp_path):
    """``seeds: [0, 1]`` trains two models and aggregates their metrics into the experiment's."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "tests" / "configs" / "tiny.yaml").read_text())
    config["experiments"]["maskrcnn"]["seeds"] = [0, 1]
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(root / "Snakefile"), "-d",
           str(tmp_path), "results/demo/metrics/maskrcnn.json", "-n", "--cores", "1",
           "--configfile", str(path)]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for needle in ("results/demo/models/maskrcnn_seed0/model.pt",
                   "results/demo/models/maskrcnn_seed1/model.pt", "rule aggregate_seeds"):
        assert needle in text, needle
    assert "results/demo/models/maskrcnn/model.pt" not in text


def test_seeding_on_cpu_turns_on_deterministic_kernels():
    import torch

    from overlapseg.train.base import seed_everything

    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(3, "cpu")
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        first = torch.rand(3)
        seed_everything(3, "cpu")
        assert torch.equal(first, torch.rand(3))
    finally:
        torch.use_deterministic_algorithms(before)

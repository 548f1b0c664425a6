"""Rule splits: deterministic stratified train/val/test split (or a preset)."""
from overlapseg.data.canonical import CanonicalDataset
from overlapseg.data.splits import make_splits, write_splits
from overlapseg.utils.workflow import log_to_file

log_to_file(snakemake)
cfg = snakemake.params.splits
splits = make_splits(CanonicalDataset(snakemake.input[0]), seed=snakemake.params.seed,
                     val_fraction=cfg.get("val", 0.2), test_fraction=cfg.get("test", 0.2),
                     preset=cfg.get("preset"))
write_splits(snakemake.output[0], splits)

"""Data: raw-format adapters, the canonical dataset, splits, the demo renderer."""

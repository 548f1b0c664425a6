"""overlapseg: instance segmentation of overlapping cells, as a reproducible study."""
__version__ = "0.1.0"

"""Apply a trained model to a folder of plain images and export the overlapping instances
for Fiji, napari and QuPath (``overlapseg segment``; :func:`segment_images` for scripts)."""
from overlapseg.segment.run import OUTPUTS, segment_images  # noqa: F401

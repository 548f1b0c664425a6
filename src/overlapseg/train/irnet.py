"""IRNet trainer (``model: irnet``): the Mask R-CNN loop with IRNet's RoI heads.

Switches and loss weights: :data:`overlapseg.models.irnet.IRNET_DEFAULTS` (paper ``001``,
Sec. 2, Tables 1-2).
"""
from __future__ import annotations

from overlapseg.models.irnet import IRNET_DEFAULTS, build_irnet
from overlapseg.train.base import register
from overlapseg.train.maskrcnn import MASKRCNN_DEFAULTS, MaskRCNNTrainer


@register("irnet")
class IRNetTrainer(MaskRCNNTrainer):
    DEFAULTS = {**MASKRCNN_DEFAULTS, **IRNET_DEFAULTS}
    SMOKE_PARAMS = {**MaskRCNNTrainer.SMOKE_PARAMS, "drm_top_n": 50, "drm_dim": 16, "drm_heads": 4}

    def build_model(self):
        return build_irnet(self.params, pretrained=not self.for_inference)

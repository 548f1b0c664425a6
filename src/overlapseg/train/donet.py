"""DoNet trainer (``model: donet``): the Mask R-CNN loop with DoNet's de-overlapping heads.

Switches and loss weights: :data:`overlapseg.models.donet.DONET_DEFAULTS` (paper ``002``,
Sec. 3, Tables 3-4): DRM intersection/complement heads, CRM fusion and consistency, MRP.
"""
from __future__ import annotations

from overlapseg.models.donet import DONET_DEFAULTS, build_donet
from overlapseg.train.base import register
from overlapseg.train.maskrcnn import MASKRCNN_DEFAULTS, MaskRCNNTrainer


@register("donet")
class DoNetTrainer(MaskRCNNTrainer):
    DEFAULTS = {**MASKRCNN_DEFAULTS, **DONET_DEFAULTS}

    def build_model(self):
        return build_donet(self.params, self.frozen_bn)

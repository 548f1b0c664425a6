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
    # warm start from a Mask R-CNN: the MRP nucleus stage (a second RPN and RoI heads on the
    # reweighted features) starts as the source's RPN and RoI heads instead of at random
    INIT_ALIASES = {"nucleus_rpn.": "rpn.", "nucleus_roi_heads.": "roi_heads."}

    def build_model(self):
        return build_donet(self.params, self.frozen_bn)

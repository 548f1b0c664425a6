"""IRNet trainer (``model: irnet``): the Mask R-CNN loop with IRNet's RoI heads.

Switches and loss weights: :data:`overlapseg.models.irnet.IRNET_DEFAULTS` (paper ``001``,
Sec. 2, Tables 1-2). Recipe defaults from the paper's implementation details (Sec. 3): biases
at twice the learning rate and a linear warm-up starting at 1/3 (over ``warmup`` iterations;
the paper's 500, its lr 0.0025 and its ImageNet ResNet-50 are set by the experiment's params).
"""
from __future__ import annotations

from overlapseg.models.irnet import IRNET_DEFAULTS, build_irnet
from overlapseg.train.base import register
from overlapseg.train.maskrcnn import MASKRCNN_DEFAULTS, MaskRCNNTrainer


@register("irnet")
class IRNetTrainer(MaskRCNNTrainer):
    DEFAULTS = {**MASKRCNN_DEFAULTS, **IRNET_DEFAULTS, "bias_lr_factor": 2.0, "warmup_factor": 1 / 3}
    SMOKE_PARAMS = {**MaskRCNNTrainer.SMOKE_PARAMS, "drm_top_n": 50, "drm_dim": 16, "drm_heads": 4}

    def build_model(self):
        return build_irnet(self.params, self.frozen_bn)

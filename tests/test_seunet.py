import math

import numpy as np
import pytest
import torch

from overlapseg.models.seunet import HEAD_CONFIGS, SEBlock, SEUNet, build_seunet, head_names


def test_se_block_keeps_shape_and_scales_each_channel_uniformly():
    torch.manual_seed(0)
    se = SEBlock(8, reduction=2)
    x = torch.rand(2, 8, 5, 7) + 0.1
    y = se(x)
    assert y.shape == x.shape
    ratio = y / x
    # one weight per (sample, channel), constant over space, in (0, 1), equal to weights()
    w = se.weights(x)
    assert w.shape == (2, 8) and (w > 0).all() and (w < 1).all()
    torch.testing.assert_close(ratio, w[:, :, None, None].expand_as(ratio))


def test_se_block_excitation_by_hand():
    # squeeze = channel means; with fc1 = identity, fc2 = identity + bias the weights are
    # sigmoid(relu(mean) + bias): a very negative bias switches a channel off
    se = SEBlock(2, reduction=1)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.eye(2))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.eye(2))
        se.fc2.bias.copy_(torch.tensor([-30.0, 0.0]))
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = 2.0
    x[0, 1] = torch.tensor([[1.0, 3.0], [0.0, 0.0]])  # mean 1
    y = se(x)
    assert y[0, 0].abs().max() < 1e-10
    torch.testing.assert_close(y[0, 1], x[0, 1] * (1 / (1 + math.exp(-1.0))))


@pytest.mark.parametrize("config", list(HEAD_CONFIGS))
@pytest.mark.parametrize("overlap", [False, True])
def test_head_configurations_outputs(config, overlap):
    heads = head_names(config, overlap)
    assert heads[0] == "cytoplasm" and (heads[-1] == "overlap") == overlap
    model = build_seunet({"heads": config, "overlap": overlap, "base_channels": 4, "depth": 2})
    assert model.heads == heads
    assert set(model.decoders) == set(heads)
    x = torch.rand(2, 1, 30, 26)  # not a multiple of 2**depth: padded and cropped back
    out = model(x)
    assert out.shape == (2, len(heads), 30, 26)
    assert torch.isfinite(out).all()


def test_study_head_sets():
    assert head_names("base") == ("cytoplasm",)
    assert head_names("2-head") == ("cytoplasm", "nucleus")
    assert head_names("3-head") == ("cytoplasm", "border", "background")
    assert head_names("4-head", True) == ("cytoplasm", "nucleus", "border", "background", "overlap")
    with pytest.raises(ValueError, match="unknown SEU-Net head configuration"):
        head_names("5-head")


def test_decoders_are_decoupled():
    torch.manual_seed(0)
    model = SEUNet(("cytoplasm", "nucleus", "overlap"), base_channels=4, depth=2)
    model(torch.rand(1, 1, 16, 16))[:, 1].sum().backward()
    def grad_norm(module):
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)
    assert grad_norm(model.decoders["nucleus"]) > 0
    assert grad_norm(model.encoder) > 0
    assert grad_norm(model.decoders["cytoplasm"]) == 0
    assert grad_norm(model.decoders["overlap"]) == 0


def test_encoder_and_decoder_blocks_carry_se():
    model = SEUNet(("cytoplasm",), base_channels=4, depth=3)
    n_se = sum(isinstance(m, SEBlock) for m in model.modules())
    assert n_se == (3 + 1) + 3  # encoder levels incl. bottleneck + decoder levels


def test_rgb_uint16_inputs_are_single_gray_channel():
    from overlapseg.data.preprocess import to_float_gray
    rgb = np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    g16 = np.random.default_rng(1).integers(0, 4096, (20, 24), dtype=np.uint16)
    for img in (rgb, g16):
        gray = to_float_gray(img)
        assert gray.shape == (20, 24) and gray.dtype == np.float32
        assert gray.min() >= 0 and gray.max() <= 1

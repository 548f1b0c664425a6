import numpy as np
import pytest
import torch

from overlapseg.models.sliding_window import sliding_window, sliding_window_numpy, tile_starts


@pytest.mark.parametrize("size,tile,stride", [(512, 256, 128), (500, 128, 64), (100, 64, 50),
                                              (64, 64, 32), (40, 64, 32)])
def test_tile_starts_cover_image(size, tile, stride):
    starts = tile_starts(size, tile, stride)
    covered = np.zeros(max(size, tile), dtype=int)
    for s in starts:
        covered[s:s + tile] += 1
    assert covered[:size].min() >= 1
    assert starts[0] == 0 and starts[-1] + tile == max(size, tile)
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_tile_starts_rejects_gaps():
    with pytest.raises(ValueError, match="gaps"):
        tile_starts(100, 32, 40)


@pytest.mark.parametrize("shape", [(3, 97, 130), (1, 64, 64), (2, 20, 45)])
def test_identity_model_reassembles_exactly(shape):
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.random(shape, dtype=np.float32))
    out = sliding_window(lambda b: b, image, tile=32, stride=12, batch_size=3)
    assert out.dtype == torch.float32 and out.shape == image.shape
    assert torch.equal(out, image)


def test_overlapping_tiles_are_averaged():
    # a "model" that outputs the tile's call index everywhere: each pixel gets the mean
    # index of the tiles covering it
    image = torch.zeros(1, 48, 48)
    calls = []

    def fn_sq(batch):
        out = []
        for _ in batch:
            calls.append(len(calls))
            out.append(torch.full((1, 32, 32), float(calls[-1])))
        return torch.stack(out)

    out = sliding_window(fn_sq, image, tile=32, stride=16, batch_size=2)
    # starts (0, 16) in each axis -> tiles 0:(0,0) 1:(0,16) 2:(16,0) 3:(16,16)
    assert out[0, 0, 0] == 0
    assert out[0, 0, 20] == 0.5       # tiles 0 and 1
    assert out[0, 20, 20] == 1.5      # all four
    assert out[0, 40, 40] == 3


def test_numpy_wrapper_and_multichannel_output():
    image = np.arange(50 * 70, dtype=np.float32).reshape(50, 70) / 3500
    out = sliding_window_numpy(lambda b: torch.cat([b, 1 - b], dim=1), image, tile=32, stride=16)
    assert out.shape == (2, 50, 70)
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_allclose(out[1], 1 - image, atol=1e-6)


def test_wrong_output_shape_is_an_error():
    with pytest.raises(ValueError, match="does not match tiles"):
        sliding_window(lambda b: b[:, :, :8, :8], torch.zeros(1, 40, 40), tile=32, stride=16)

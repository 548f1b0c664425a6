"""Coarse-to-fine generator helpers (issue 19): Eq. 1 ovals, boxes, colour masks with boundary
class, iterative k-terminal cut, decoding, CycleGAN losses, determinism."""
import numpy as np
import pytest
import torch

from overlapseg.gan.coarse_to_fine import (COARSE_TO_FINE_DEFAULTS, adjacency, assign_colours,
                                           boxes_from_labels, boxes_from_ovals,
                                           coarse_to_fine_masks, colour_mask_foreground,
                                           decode_colour_mask,
                                           encode_colour_mask, k_terminal_cut, labels_from_masks,
                                           oval_intensity, palette, render_ovals, render_points,
                                           seed_points, stage1_pair, stage2_pair)
from overlapseg.gan.cyclegan import (CYCLEGAN_DEFAULTS, ImagePool, build_cyclegan,
                                     cyclegan_losses, cyclegan_update)
from overlapseg.gan.pix2pix import from_network_range, to_network_range, translate
from overlapseg.gan.step import StepOptions

torch.set_num_threads(1)


def _disc(shape, centre, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_oval_formula_on_a_known_box():
    bv = 0.25
    # box 40 x 24 (rows x cols) centred at (32, 32): oval semi-axes w/4 = 10 and h/4 = 6
    image = oval_intensity((64, 64), (32, 32), (40, 24), bv=bv)
    assert image[32, 32] == pytest.approx(1.0)
    for y, x in [(42, 32), (22, 32), (32, 38), (32, 26)]:  # on the oval's rim
        assert image[y, x] == pytest.approx(bv / (1 + bv))
    assert image[37, 32] == pytest.approx((1 - 0.25 + bv) / (1 + bv))  # halfway to the rim
    for y, x in [(43, 32), (32, 39), (21, 32), (40, 37)]:  # just outside
        assert image[y, x] == 0
    rows, cols = np.nonzero(image)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (22, 42, 26, 38)
    # same formula in 3D (ellipsoids) and at stage 2's full box size
    ball = oval_intensity((20, 20, 20), (10, 10, 10), (8, 8, 8), bv=bv)
    assert ball[10, 10, 10] == pytest.approx(1.0) and ball[10, 10, 12] == pytest.approx(0.2)
    assert ball[10, 10, 13] == 0
    full = oval_intensity((64, 64), (32, 32), (40, 24), bv=bv, scale=1.0)
    assert full[52, 32] == pytest.approx(0.2) and full[53, 32] == 0


def test_one_layer_boxes_round_trip_through_connected_components():
    shape = (96, 96)
    centres = np.array([[20.0, 20.0], [20.0, 60.0], [64.0, 40.0]])
    sizes = np.array([[20.0, 28.0], [24.0, 24.0], [36.0, 20.0]])
    # the first two boxes touch (x 6..34 and 48..72 do not, but 20 + 14 = 34 vs 60 - 12 = 48)
    image = render_ovals(shape, centres, sizes)
    assert image.max() == pytest.approx(1.0) and image.min() == 0
    got_c, got_s = boxes_from_ovals(image)
    order = np.lexsort(got_c.T[::-1])
    np.testing.assert_allclose(got_c[order], centres[np.lexsort(centres.T[::-1])], atol=0.5)
    np.testing.assert_allclose(got_s[order], sizes[np.lexsort(centres.T[::-1])], atol=2.0)
    labels = np.zeros(shape, np.int32)
    labels[10:31, 5:36] = 1
    c, s = boxes_from_labels(labels)
    np.testing.assert_array_equal(c, [[20.0, 20.0]])
    np.testing.assert_array_equal(s, [[21.0, 31.0]])


def test_seed_point_processes():
    shape = (128, 128)
    rng = np.random.default_rng(0)
    uniform = seed_points(shape, 60, rng, "uniform")
    clustered = seed_points(shape, 60, rng, "clustered", n_clusters=3, cluster_std=4.0)
    for pts in (uniform, clustered):
        assert pts.shape == (60, 2) and pts.min() >= 0 and pts.max() <= 127

    def mean_nn(p):
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)) + np.eye(len(p)) * 1e9
        return d.min(1).mean()

    assert mean_nn(clustered) < 0.5 * mean_nn(uniform)
    image = render_points(uniform, shape, radius=1.5)
    assert image.max() == 1 and image.sum() >= 60
    with pytest.raises(ValueError):
        seed_points(shape, 5, rng, "poisson-disc")


def _coloured(labels, colours, noise=0.0, seed=0):
    table = np.concatenate([np.zeros((1, 3)), colours])
    img = np.moveaxis(table[labels], -1, 0)
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


@pytest.mark.parametrize("centres", [[(32, 30), (32, 56)],
                                     [(24, 30), (24, 56), (46, 43)]])
def test_k_terminal_cut_separates_touching_discs(centres):
    shape = (64, 96)
    discs = [_disc(shape, c, 14) for c in centres]
    labels = labels_from_masks(np.stack(discs))
    colour = _coloured(labels, palette(8)[[0, 3, 5][:len(centres)]], noise=0.05)
    component = labels > 0
    from scipy import ndimage
    assert ndimage.label(component)[1] == 1  # one merged component
    out = k_terminal_cut(component, colour, np.array(centres, float))
    assert set(np.unique(out)) == set(range(len(centres) + 1))
    assert not (out[~component]).any()
    for k, d in enumerate(discs, 1):
        assert _iou(out == k, d) > 0.9


def test_k_terminal_cut_follows_the_neck_without_colour_help():
    shape = (64, 96)
    discs = [_disc(shape, (32, 30), 14), _disc(shape, (32, 56), 14)]
    component = np.logical_or(*discs)
    out = k_terminal_cut(component, np.ones((3,) + shape), np.array([[32, 30], [32, 56]], float))
    assert _iou(out == 1, discs[0]) > 0.9 and _iou(out == 2, discs[1]) > 0.9
    seeds = np.zeros(shape, np.int64)
    seeds[30:35, 28:33], seeds[30:35, 54:59] = 1, 2
    by_seed = k_terminal_cut(component, np.ones(shape), seeds)
    np.testing.assert_array_equal(by_seed, out)
    with pytest.raises(ValueError):
        k_terminal_cut(component, np.ones((3, 10, 10)), np.array([[32, 30]], float))


def test_colour_mask_encoding_and_decoding():
    shape = (64, 96)
    discs = [_disc(shape, (24, 30), 14), _disc(shape, (24, 56), 14), _disc(shape, (50, 80), 8)]
    labels = labels_from_masks(np.stack(discs))
    rng = np.random.default_rng(0)
    index = assign_colours(labels, rng, 8)
    assert index[1] != index[2]  # touching instances differ in colour
    assert adjacency(labels) == {1: {2}, 2: {1}, 3: set()}
    colours = palette(8)[index[1:]]
    encoded = encode_colour_mask(labels, colours, boundary_width=1)
    assert encoded.shape == (4,) + shape
    np.testing.assert_allclose(encoded[:3, 24, 30], colours[0])
    assert encoded[3, 24, 41] == encoded[3, 24, 42] == 1  # both rims where the discs meet
    assert encoded[3, 24, 30] == 0 and encoded[3, 24, 43] == 0
    centres, sizes = boxes_from_labels(labels)
    decoded = decode_colour_mask(encoded, centres, sizes)
    for k in (1, 2, 3):
        assert max(_iou(decoded == j, labels == k) for j in range(1, decoded.max() + 1)) > 0.9
    # the generator forgot the boundary between the first two: the k-terminal cut splits them
    merged = encoded.copy()
    merged[3] = 0
    split = decode_colour_mask(merged, centres, sizes)
    assert split.max() == 3
    for k in (1, 2):
        assert max(_iou(split == j, discs[k - 1]) for j in (1, 2, 3)) > 0.9


def test_every_decoded_instance_lies_on_generated_foreground():
    rng = np.random.default_rng(1)
    shape = (64, 64)
    box, _ = stage2_pair(labels_from_masks(np.stack([_disc(shape, (20, 20), 10),
                                                      _disc(shape, (36, 30), 10)])), rng)
    torch.manual_seed(0)
    G2 = build_cyclegan(3, 4, crop_size=64, ngf=4, ndf=4)["G_ab"]
    # an untrained generator: blotchy colours and boundaries, the hardest case for decoding
    generated = from_network_range(translate(G2, to_network_range(box), tile=64))
    noisy = np.clip(generated + rng.normal(0, 0.2, generated.shape), 0, 1)
    for image in (generated, noisy):
        centres = np.array([[20, 20], [36, 30], [5, 60]], float)
        labels = decode_colour_mask(image, centres, np.full((3, 2), 20.0), min_pixels=3)
        _, _, foreground = colour_mask_foreground(image)  # the processed (closed) mask
        assert labels.max() > 0
        assert not (labels > 0)[~foreground].any()
        for k in range(1, labels.max() + 1):  # consecutive labels, none empty
            assert (labels == k).any()


def test_decoding_joins_striped_rows_and_drops_specks_without_a_box():
    """An undertrained stage 2 draws a nucleus with every other row dark (measured at the CPU
    budget): decoded without processing, that is one instance per row. The grey closing makes
    it one instance; a generator speck without a box centre is dropped, an added
    nucleus-sized blob is kept."""
    shape = (64, 64)
    nucleus = _disc(shape, (20, 20), 9)
    blob = _disc(shape, (45, 45), 8)   # no box centre, nucleus-sized: an added instance
    speck = _disc(shape, (50, 10), 2)  # no box centre, 13 px
    image = np.zeros((4,) + shape, np.float32)
    image[1][nucleus | blob | speck] = 0.9
    image[1, ::2] *= 0.05  # dark stripes
    centres, sizes = np.array([[20.0, 20.0]]), np.array([[18.0, 18.0]])
    raw = decode_colour_mask(image, centres, sizes, close_radius=0, min_extra_fraction=0.0)
    assert raw.max() > 5  # the defect: stripes as instances
    labels = decode_colour_mask(image, centres, sizes)
    assert labels.max() == 2
    assert _iou(labels == labels[20, 20], nucleus) > 0.85
    assert _iou(labels == labels[45, 45], blob) > 0.85
    assert labels[50, 10] == 0
    with pytest.raises(ValueError, match="close_radius"):
        colour_mask_foreground(image, close_radius=-1)
    with pytest.raises(ValueError, match="min_extra_fraction"):
        decode_colour_mask(image, centres, sizes, min_extra_fraction=-0.5)


def _adam_pair(nets, lr):
    gen = list(nets["G_ab"].parameters()) + list(nets["G_ba"].parameters())
    disc = list(nets["D_a"].parameters()) + list(nets["D_b"].parameters())
    return torch.optim.Adam(gen, lr=lr, betas=(0.5, 0.999)), torch.optim.Adam(disc, lr=lr, betas=(0.5, 0.999))


def test_cyclegan_cycle_loss_decreases_on_a_toy_pair():
    rng = np.random.default_rng(0)
    shape = (32, 32)
    labels = np.zeros(shape, np.int32)
    labels[4:14, 4:16], labels[18:28, 12:26] = 1, 2
    points, boxes = stage1_pair(labels, shape, 2, rng)
    a = torch.from_numpy(to_network_range(points))[None]
    b = torch.from_numpy(to_network_range(boxes))[None]
    torch.manual_seed(0)
    nets = build_cyclegan(1, 1, crop_size=32, ngf=4, ndf=4)
    opt_g, opt_d = _adam_pair(nets, 2e-3)  # 10x the default so 20 steps show it
    pools = (ImagePool(4, 1, 32), ImagePool(4, 1, 32))
    cycle = []
    for it in range(20):
        for k, pool in enumerate(pools):
            pool.rng = np.random.default_rng([it, k])
        out = cyclegan_update(nets, opt_g, opt_d, [(a, b)], pools=pools, lambda_identity=0.5)
        assert all(torch.isfinite(v) for v in out.values())
        cycle.append(float(out["G_cycle_a"] + out["G_cycle_b"]))
    assert int(pools[0].count) == 4  # the history filled up
    assert np.mean(cycle[-3:]) < 0.9 * cycle[0]


def test_cyclegan_update_accumulates_micro_batches_and_clips():
    """Two micro-batches of one image step like one batch of two (norm-free nets, so the batch
    statistics cannot differ): the update honours the Trainer's ``accumulate``; with
    ``grad_clip`` the stepped gradients have at most that norm."""
    torch.manual_seed(1)
    a, b = torch.rand(2, 1, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    results = []
    for batches in ([(a[:1], b[:1]), (a[1:], b[1:])], [(a, b)]):
        torch.manual_seed(0)
        nets = build_cyclegan(1, 1, crop_size=16, ngf=4, ndf=4, n_layers_d=1, norm="none")
        opt_g, opt_d = _adam_pair(nets, 1e-3)
        out = cyclegan_update(nets, opt_g, opt_d, batches, paired_l1=1.0)
        results.append((out, {k: v.clone() for k, v in nets["G_ab"].state_dict().items()}))
    (out1, w1), (out2, w2) = results
    torch.testing.assert_close(out1["G_total"], out2["G_total"])
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k])
    torch.manual_seed(0)
    nets = build_cyclegan(1, 1, crop_size=16, ngf=4, ndf=4, n_layers_d=1)
    opt_g, opt_d = _adam_pair(nets, 1e-3)
    checked = []
    cyclegan_update(nets, opt_g, opt_d, [(a, b)],
                    options=StepOptions(grad_clip=1e-3, check_finite=lambda t, p: checked.append(set(p))))
    for group in (("G_ab", "G_ba"), ("D_a", "D_b")):
        grads = [q.grad for k in group for q in nets[k].parameters()]
        assert float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) \
            <= 1e-3 * 1.0001
    assert checked and {"G_total", "D_total", "G_cycle_a"} <= checked[0]


def test_cyclegan_loss_terms_and_paired_l1():
    torch.manual_seed(0)
    nets = build_cyclegan(3, 4, crop_size=32, ngf=4, ndf=4, generator="resnet", n_blocks=1)
    a, b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 4, 32, 32) * 2 - 1
    args = (nets["G_ab"], nets["G_ba"], nets["D_a"], nets["D_b"], a, b)
    out = cyclegan_losses(*args, lambda_cycle=10.0, lambda_identity=0.0, paired_l1=2.0)
    expected = (out["G_gan_ab"] + out["G_gan_ba"] + 10.0 * (out["G_cycle_a"] + out["G_cycle_b"])
                + 2.0 * out["G_paired"])
    torch.testing.assert_close(out["G_total"], expected)
    assert out["G_paired"] > 0 and out["G_idt_a"] == 0
    torch.testing.assert_close(out["D_total"], out["D_a"] + out["D_b"])
    with pytest.raises(ValueError, match="identity"):
        cyclegan_losses(*args, lambda_identity=0.5)
    assert CYCLEGAN_DEFAULTS["lambda_cycle"] == 10.0


def test_image_pool_state_round_trip():
    """The history is the pool's buffers: a pool loaded from another's state, drawing from the
    same RNG, answers the same (what makes a resumed CycleGAN run exact)."""
    pool = ImagePool(2, 1, 2)
    pool.rng = np.random.default_rng(3)
    for i in range(5):
        pool.query(torch.full((1, 1, 2, 2), float(i)))
    twin = ImagePool(2, 1, 2)
    twin.load_state_dict(pool.state_dict())
    pool.rng, twin.rng = np.random.default_rng(4), np.random.default_rng(4)
    x = torch.full((3, 1, 2, 2), 9.0)
    assert torch.equal(pool.query(x), twin.query(x))
    with pytest.raises(RuntimeError, match="rng"):
        ImagePool(1, 1, 2).query(x)


def test_determinism_with_fixed_seed():
    shape = (64, 64)
    for process in ("uniform", "clustered"):
        a = seed_points(shape, 20, np.random.default_rng(5), process)
        b = seed_points(shape, 20, np.random.default_rng(5), process)
        np.testing.assert_array_equal(a, b)
    labels = labels_from_masks(np.stack([_disc(shape, (20, 20), 10), _disc(shape, (36, 30), 10)]))
    p1 = stage2_pair(labels, np.random.default_rng(2))
    p2 = stage2_pair(labels, np.random.default_rng(2))
    for x, y in zip(p1, p2):
        np.testing.assert_array_equal(x, y)

    def run():
        torch.manual_seed(0)
        g1 = build_cyclegan(1, 1, crop_size=64, ngf=4, ndf=4)["G_ab"]
        g2 = build_cyclegan(3, 4, crop_size=64, ngf=4, ndf=4)["G_ab"]
        rng = np.random.default_rng(4)
        points = render_points(seed_points(shape, 6, rng), shape)[None]
        # stage 1 stand-in keeps the boxes meaningful: ovals at the seed points, plus G1's texture
        def stage1(x):
            ovals = render_ovals(shape, seed_points(shape, 6, np.random.default_rng(4)),
                                 np.full((6, 2), 16.0))[None]
            texture = from_network_range(translate(g1, to_network_range(x), 64))
            return np.clip(ovals + 0.05 * texture, 0, 1)

        def stage2(x):
            return from_network_range(translate(g2, to_network_range(x), 64))

        return coarse_to_fine_masks(points, stage1, stage2, rng)

    first, second = run(), run()
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    assert len(first[1]) > 0
    assert COARSE_TO_FINE_DEFAULTS["bv"] == 0.25 and COARSE_TO_FINE_DEFAULTS["stage1_scale"] == 0.5

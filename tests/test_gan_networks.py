"""pix2pix building blocks (issue 18): networks, receptive field, losses, tiled inference,
conditionings, crops, and the weight-free quality statistics."""
import numpy as np
import pytest
import torch

from overlapseg.gan.networks import (InferenceDropout, PatchDiscriminator, ResnetGenerator,
                                     UNetGenerator, conv, receptive_field, unet_depth)
from overlapseg.gan.pix2pix import (PIX2PIX_DEFAULTS, additive_condition, build_pix2pix,
                                    discriminator_loss, generator_loss, make_optimizers,
                                    pix2pix_step, render_instance_condition, sample_paired_crops,
                                    translate)
from overlapseg.gan.quality import edge_alignment, fid, intensity_distance, mean_edge_alignment

torch.set_num_threads(1)
TINY = {"ngf": 4, "ndf": 4}


def _disc(shape, centre, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generator_and_discriminator_shapes(size):
    torch.manual_seed(0)
    G, D = build_pix2pix(3, 2, crop_size=size, **TINY)
    assert G.depth == int(np.log2(size))  # halved down to a 1x1 bottleneck
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = G(x)
    assert y.shape == (2, 2, size, size)
    assert y.abs().max() <= 1  # tanh output
    logits = D(y, x)
    # three stride-2 convs then two stride-1 4x4 convs with padding 1: size / 8 - 2 patches
    assert logits.shape == (2, 1, size // 8 - 2, size // 8 - 2)


def test_generator_depth_follows_crop_and_min_size():
    assert unet_depth(512) == 9  # the thesis' nine levels for 512 px crops
    assert unet_depth(256, min_size=4) == 6
    assert unet_depth(96) == 5  # 96 -> 3: stops where the side is odd
    with pytest.raises(ValueError):
        unet_depth(6)
    G = UNetGenerator(1, 1, ngf=4, crop_size=64)
    with pytest.raises(ValueError, match="divisible"):
        G(torch.zeros(1, 1, 48, 48))
    # dropout sits in the three decoder blocks above the bottleneck, as in pix2pix
    big = UNetGenerator(1, 1, ngf=2, crop_size=256)
    assert sum(isinstance(m, InferenceDropout) for m in big.modules()) == 3


def test_conv_factory_is_dimension_agnostic():
    assert conv(2) is torch.nn.Conv2d and conv(3) is torch.nn.Conv3d
    torch.manual_seed(0)
    G3 = UNetGenerator(1, 1, ngf=2, crop_size=16, dims=3)
    assert G3(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    R = ResnetGenerator(2, 1, ngf=4, n_blocks=1)
    assert R(torch.zeros(1, 2, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError):
        conv(4)


@pytest.mark.parametrize("n_layers, expected", [(1, 16), (3, 70), (5, 286)])
def test_patchgan_receptive_field_computed_from_layers(n_layers, expected):
    D = PatchDiscriminator(3, cond_channels=1, ndf=2, n_layers=n_layers)
    assert receptive_field(D) == expected
    assert receptive_field([(4, 2), (4, 2), (4, 2), (4, 1), (4, 1)]) == 70


def test_patchgan_receptive_field_matches_gradient_support():
    # independent check: the input pixels that influence one central output logit span 70 px
    torch.manual_seed(0)
    D = PatchDiscriminator(1, ndf=2, n_layers=3).eval()
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    out = D(x)
    c = out.shape[-1] // 2
    out[0, 0, c, c].backward()
    rows = np.flatnonzero(x.grad[0, 0].abs().sum(dim=1).numpy() > 0)
    cols = np.flatnonzero(x.grad[0, 0].abs().sum(dim=0).numpy() > 0)
    assert rows[-1] - rows[0] + 1 == 70 and cols[-1] - cols[0] + 1 == 70


def test_determinism_with_seed_and_dropout_off():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    nets = []
    for _ in range(2):
        torch.manual_seed(7)
        G, _ = build_pix2pix(3, 1, crop_size=64, dropout_at_inference=False, **TINY)
        nets.append(G.eval())
    with torch.no_grad():
        a, b, a2 = nets[0](x), nets[1](x), nets[0](x)
    assert torch.equal(a, b) and torch.equal(a, a2)
    # kept on at inference, dropout makes outputs vary (the thesis' noise) unless reseeded
    G = nets[0]
    G.set_inference_dropout(True)
    with torch.no_grad():
        torch.manual_seed(1)
        d1 = G(x)
        d2 = G(x)
        torch.manual_seed(1)
        d3 = G(x)
    assert not torch.equal(d1, d2) and torch.equal(d1, d3)


def test_pix2pix_losses_finite_and_l1_weighted():
    torch.manual_seed(0)
    G, D = build_pix2pix(2, 1, crop_size=64, **TINY)
    cond = torch.rand(2, 2, 64, 64) * 2 - 1
    real = torch.rand(2, 1, 64, 64) * 2 - 1
    fake = G(cond)
    g100 = generator_loss(D, cond, fake, real, lambda_l1=100.0)
    g0 = generator_loss(D, cond, fake, real, lambda_l1=0.0)
    assert all(torch.isfinite(v) for v in g100.values())
    torch.testing.assert_close(g100["l1"], (fake - real).abs().mean())
    torch.testing.assert_close(g100["total"], g100["gan"] + 100.0 * g100["l1"])
    torch.testing.assert_close(g0["total"], g0["gan"])
    assert PIX2PIX_DEFAULTS["lambda_l1"] == 100.0
    for mode in ("vanilla", "lsgan"):
        d = discriminator_loss(D, cond, fake, real, gan_mode=mode)
        assert all(torch.isfinite(v) for v in d.values())
        torch.testing.assert_close(d["total"], 0.5 * (d["real"] + d["fake"]))
    d["total"].backward()  # the fake is detached: no gradient reaches the generator
    assert all(p.grad is None for p in G.parameters())
    with pytest.raises(ValueError):
        generator_loss(D, cond, fake, real, gan_mode="wgan")


def test_pix2pix_step_updates_and_fits_a_toy_pair():
    torch.manual_seed(0)
    G, D = build_pix2pix(1, 1, crop_size=32, **TINY)
    opt_g, opt_d = make_optimizers(G, D)
    assert opt_g.defaults["lr"] == 2e-4 and opt_g.defaults["betas"] == (0.5, 0.999)
    cond = torch.from_numpy(_disc((32, 32), (16, 16), 9).astype(np.float32))[None, None] * 2 - 1
    real = -cond
    l1 = [pix2pix_step(G, D, opt_g, opt_d, cond, real)["G_l1"] for _ in range(15)]
    assert np.isfinite(l1).all() and np.mean(l1[-3:]) < l1[0]


def test_tiled_translate_equals_direct_and_handles_any_size():
    torch.manual_seed(0)
    G, _ = build_pix2pix(2, 3, crop_size=64, dropout_at_inference=False, **TINY)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    G.eval()
    with torch.no_grad():
        direct = G(torch.from_numpy(image)[None])[0].numpy()
    G.train()
    tiled = translate(G, image, tile=64, stride=32)
    assert G.training  # mode restored
    np.testing.assert_allclose(tiled, direct, atol=1e-6)
    big = rng.uniform(-1, 1, (2, 100, 150)).astype(np.float32)
    out = translate(G, big, tile=64, stride=40)
    assert out.shape == (3, 100, 150) and np.isfinite(out).all() and np.abs(out).max() <= 1
    # a pixel covered by one tile only equals that tile's prediction
    G.eval()
    with torch.no_grad():
        corner = G(torch.from_numpy(big[:, :64, :64].copy())[None])[0].numpy()
    np.testing.assert_allclose(out[:, :10, :10], corner[:, :10, :10], atol=1e-6)
    small = translate(G, rng.uniform(-1, 1, (2, 40, 50)).astype(np.float32), tile=64)
    assert small.shape == (3, 40, 50)
    with pytest.raises(ValueError):
        translate(G, image, tile=64, stride=0)


def test_instance_condition_channels():
    shape = (48, 64)
    cells = np.stack([_disc(shape, (24, 22), 12), _disc(shape, (24, 40), 12)])
    nuclei = np.stack([_disc(shape, (24, 18), 4)])
    cond = render_instance_condition(cells, nuclei, boundary_width=1)
    assert cond.shape == (3, 48, 64) and cond.dtype == np.float32
    assert set(np.unique(cond)) <= {0.0, 1.0}
    cyto, nuc, bnd = cond.astype(bool)
    assert not (cyto & nuc).any() and (cyto | nuc).sum() == cells.any(0).sum()
    np.testing.assert_array_equal(nuc, nuclei[0])
    # the second cell's outline shows inside the first (overlap stays visible)
    assert bnd[24, 28] and cells[0][24, 28] and cells[1][24, 28]
    assert not bnd[30, 25]  # inside one cell only: no boundary
    empty = render_instance_condition(cells, np.zeros((0, 48, 64), bool))
    assert not empty[1].any()
    with pytest.raises(ValueError):
        render_instance_condition(cells[0], nuclei)


def test_additive_condition_and_paired_crops():
    composite = np.zeros((20, 30, 3), np.uint8)
    composite[5:10, 5:10] = (255, 255, 0)
    cond = additive_condition(composite)
    assert cond.shape == (1, 20, 30) and cond.max() == pytest.approx(2 / 3) and cond.min() == 0
    rng = np.random.default_rng(0)
    a = rng.random((2, 50, 40)).astype(np.float32)
    b = np.concatenate([a, 2 * a[:1]])
    ca, cb = sample_paired_crops(a, b, crop=32, n=5, rng=np.random.default_rng(3))
    assert ca.shape == (5, 2, 32, 32) and cb.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(cb[:, :2], ca)  # the same window and flips in both
    np.testing.assert_allclose(cb[:, 2], 2 * ca[:, 0])
    again = sample_paired_crops(a, b, crop=32, n=5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again[0], ca)
    padded, _ = sample_paired_crops(a[:, :20, :20], a[:, :20, :20], crop=32, n=1, rng=rng)
    assert padded.shape == (1, 2, 32, 32)
    with pytest.raises(ValueError):
        sample_paired_crops(a, a[:, :10], crop=8, n=1, rng=rng)


def test_intensity_distance_and_edge_alignment():
    flat = [np.full((32, 32), 0.2, np.float32)]
    assert intensity_distance(flat, flat) == 0.0
    half = [np.full((32, 32), 0.5, np.float32)]
    assert intensity_distance(flat, half) == pytest.approx(0.3, abs=1 / 256)
    shape = (64, 64)
    masks = np.stack([_disc(shape, (20, 20), 10), _disc(shape, (40, 42), 12)])
    image = (0.8 - 0.5 * masks.any(0)).astype(np.float32)  # dark cells on bright background
    good = edge_alignment(image, masks)
    shifted = edge_alignment(image, np.roll(masks, 8, axis=2))
    assert good["alignment"] > 0.95 and good["chance"] < 0.4
    assert shifted["alignment"] < 0.6 * good["alignment"]
    both = mean_edge_alignment([image, image], [masks, masks])
    assert both["alignment"] == pytest.approx(good["alignment"])
    assert both["n_boundary"] == 2 * good["n_boundary"]


def test_fid_is_never_made_up(tmp_path):
    imgs = [np.zeros((32, 32), np.uint8)] * 3
    value, note = fid(imgs, imgs, tmp_path / "missing.pth")
    assert value is None and note.startswith("not computed")
    value, note = fid(imgs, imgs, None)
    assert value is None and note.startswith("not computed")
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a weights file")
    value, note = fid(imgs, imgs, bogus)
    assert value is None and note.startswith("not computed")


def test_gan_report_quality_and_side_by_side_figure(tmp_path):
    """The gan_report rule's numbers (FID "not computed" without weights, never a number) and
    its real-vs-generated figure, for a pix2pix conditioning and a one-category generator."""
    import json

    from overlapseg.data.canonical import Instance, Sample, write_canonical_dataset
    from overlapseg.gan.report import side_by_side_figure, write_quality

    def dataset(root, shift):
        yy, xx = np.mgrid[:48, :48]
        samples = []
        for i in range(2):
            cell = (yy - 24) ** 2 + (xx - 20 - shift - i) ** 2 <= 100
            nucleus = (yy - 24) ** 2 + (xx - 20 - shift - i) ** 2 <= 9
            image = np.full((48, 48), 220, np.uint8)
            image[cell], image[nucleus] = 150, 60
            samples.append(Sample(f"{root.name}{i}", image, [Instance(cell, "cytoplasm"),
                                                               Instance(nucleus, "nucleus", 0)]))
        return write_canonical_dataset(samples, root)

    real, fake = dataset(tmp_path / "real", 0), dataset(tmp_path / "fake", 4)
    summary = write_quality(tmp_path / "q.json", real_dir=real, real_names=["real0", "real1"],
                            synth_dir=fake, fid_weights=None, category="cytoplasm")
    assert json.loads((tmp_path / "q.json").read_text()) == summary
    assert summary["fid"] is None and summary["fid_note"].startswith("not computed")
    assert summary["n_real"] == summary["n_generated"] == 2 and summary["intensity_distance"] >= 0
    for condition, category in (("composite", None), ("mask", None), (None, "nucleus")):
        png, pdf = tmp_path / f"{category}{condition}.png", tmp_path / f"{category}{condition}.pdf"
        side_by_side_figure(real, ["real0", "real1"], fake, condition, png, pdf, n=2, category=category)
        assert png.stat().st_size > 1000 and pdf.read_bytes().startswith(b"%PDF")

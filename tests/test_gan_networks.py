"""pix2pix building blocks (issue 18): networks, receptive field, losses, the update, tiled
inference as in training (issue 28), conditionings (the additive composite of real overlaps,
issue 28), crops, and the weight-free quality statistics."""
import copy
import json

import numpy as np
import pytest
import torch

from overlapseg.gan.networks import (InferenceDropout, PatchDiscriminator, ResnetGenerator,
                                     UNetGenerator, conv, receptive_field, unet_depth)
from overlapseg.gan.pix2pix import (PIX2PIX_DEFAULTS, additive_composite, additive_condition,
                                    build_pix2pix, discriminator_loss, generator_loss,
                                    pix2pix_update, render_instance_condition, sample_paired_crops,
                                    translate, translate_unit)
from overlapseg.gan.quality import (edge_alignment, fid, instance_fraction, intensity_distance,
                                    mean_edge_alignment, overlap_density_ratio, texture_statistics)
from overlapseg.gan.step import StepOptions

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


def _adam(net, lr=2e-4):
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))


def test_pix2pix_update_fits_a_toy_pair():
    torch.manual_seed(0)
    G, D = build_pix2pix(1, 1, crop_size=32, **TINY)
    opt_g, opt_d = _adam(G), _adam(D)
    cond = torch.from_numpy(_disc((32, 32), (16, 16), 9).astype(np.float32))[None, None] * 2 - 1
    real = -cond
    l1 = [float(pix2pix_update(G, D, opt_g, opt_d, [(cond, real)])["G_l1"]) for _ in range(15)]
    assert np.isfinite(l1).all() and np.mean(l1[-3:]) < l1[0]
    assert all(p.requires_grad for p in D.parameters())  # D unfrozen again


def test_pix2pix_update_accumulates_micro_batches_clips_and_checks():
    """Two micro-batches of one image step exactly like one batch of two (no norm, no dropout,
    so batch statistics cannot differ): the update honours the Trainer's ``accumulate``
    instead of stepping per micro-batch; ``grad_clip`` bounds the stepped gradients; the
    finite check sees every loss before any step."""
    torch.manual_seed(1)
    cond, real = torch.rand(2, 2, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    weights = []
    for batches in ([(cond[:1], real[:1]), (cond[1:], real[1:])], [(cond, real)]):
        torch.manual_seed(0)
        G, D = build_pix2pix(2, 1, crop_size=32, norm="none", dropout=0.0, **TINY)
        out = pix2pix_update(G, D, _adam(G), _adam(D), batches)
        weights.append((out, copy.deepcopy(G.state_dict()), copy.deepcopy(D.state_dict())))
    (o1, g1, d1), (o2, g2, d2) = weights
    torch.testing.assert_close(o1["G_total"], o2["G_total"])
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k])
    for k in d1:
        torch.testing.assert_close(d1[k], d2[k])
    torch.manual_seed(0)
    G, D = build_pix2pix(2, 1, crop_size=32, **TINY)
    seen = []
    pix2pix_update(G, D, _adam(G), _adam(D), [(cond, real)],
                   options=StepOptions(grad_clip=1e-4, check_finite=lambda t, p: seen.append(sorted(p))))
    for net in (G, D):
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in net.parameters()]))
        assert float(norm) <= 1e-4 * 1.0001
    assert seen == [["D_fake", "D_real", "D_total"], ["G_gan", "G_l1", "G_total"]]
    with pytest.raises(FloatingPointError):
        def fail(total, parts):
            raise FloatingPointError("stop")
        before = [p.detach().clone() for p in D.parameters()]
        pix2pix_update(G, D, _adam(G), _adam(D), [(cond, real)], options=StepOptions(check_finite=fail))
    assert all(torch.equal(b, p) for b, p in zip(before, D.parameters()))  # no step taken


def test_tiled_translate_uses_batch_statistics_and_handles_any_size():
    torch.manual_seed(0)
    G, _ = build_pix2pix(2, 3, crop_size=64, dropout=0.0, **TINY)
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (2, 64, 64)).astype(np.float32)
    with torch.no_grad():  # pix2pix at test time: the generator as in training (batch statistics)
        direct = copy.deepcopy(G).train()(torch.from_numpy(image)[None])[0].numpy()
        with_running = copy.deepcopy(G).eval()(torch.from_numpy(image)[None])[0].numpy()
    G.train()
    tiled = translate(G, image, tile=64, stride=32)
    assert G.training  # mode restored
    np.testing.assert_allclose(tiled, direct, atol=1e-6)
    assert np.abs(tiled - with_running).max() > 1e-3  # running statistics would differ
    big = rng.uniform(-1, 1, (2, 100, 150)).astype(np.float32)
    out = translate(G, big, tile=64, stride=40)
    assert out.shape == (3, 100, 150) and np.isfinite(out).all() and np.abs(out).max() <= 1
    # a pixel covered by one tile only equals that tile's prediction
    with torch.no_grad():
        corner = copy.deepcopy(G).train()(torch.from_numpy(big[:, :64, :64].copy())[None])[0].numpy()
    np.testing.assert_allclose(out[:, :10, :10], corner[:, :10, :10], atol=1e-6)
    small = translate(G, rng.uniform(-1, 1, (2, 40, 50)).astype(np.float32), tile=64)
    assert small.shape == (3, 40, 50)
    with pytest.raises(ValueError):
        translate(G, image, tile=64, stride=0)


def test_translation_does_not_depend_on_running_statistics():
    """Issue 28: a tile's output is the same whatever the BatchNorm running statistics hold,
    and translating leaves them untouched; dropout stays on at inference, seeded."""
    torch.manual_seed(0)
    G, _ = build_pix2pix(3, 1, crop_size=32, **TINY)  # dropout_at_inference on (the default)
    cond = np.random.default_rng(1).uniform(0, 1, (3, 48, 40)).astype(np.float32)
    G.eval()
    first = translate_unit(G, cond, 32, 16, seed=5)
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    stats = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in norms]
    again = translate_unit(G, cond, 32, 16, seed=5)
    assert np.array_equal(first, again)  # same seed, same dropout draws: bitwise
    assert all(torch.equal(m.running_mean, s[0]) and torch.equal(m.running_var, s[1])
               and int(m.num_batches_tracked) == s[2] for m, s in zip(norms, stats))
    with torch.no_grad():
        for m in norms:
            m.running_mean.add_(3.0)
            m.running_var.mul_(10.0)
    assert np.array_equal(translate_unit(G, cond, 32, 16, seed=5), first)
    assert not np.array_equal(translate_unit(G, cond, 32, 16, seed=6), first)  # dropout is on
    assert not G.training


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


def test_training_composite_of_a_real_overlap_matches_synthesis():
    """Issue 28: a real overlap pixel already carries OD_a + OD_b. The training composite of a
    real two-disc image must equal what copy-paste (``output: additive``) builds from the same
    two cells pasted in place - each cell's own OD added - so the overlap is not doubled."""
    from overlapseg.data.canonical import Instance, Sample
    from overlapseg.synth.copypaste import _add_clipped, config_from_params, make_piece
    from overlapseg.synth.sources import load_source, to_float

    shape, bg = (48, 64), 0.9
    a, b = _disc(shape, (24, 24), 11), _disc(shape, (24, 40), 11)
    od_a, od_b = 0.35, 0.5

    def image(od):  # Beer-Lambert: transmitted intensity, uint8 as stored
        return np.round(bg * np.exp(-od) * 255).astype(np.uint8)

    real = to_float(image(od_a * a + od_b * b))[..., 0]
    composite = additive_composite(real, np.stack([a, b]))
    overlap, only_a, only_b = a & b, a & ~b, b & ~a
    top = od_a + od_b
    np.testing.assert_allclose(composite[overlap], 1.0, atol=0.01)  # the maximum: not doubled
    np.testing.assert_allclose(composite[only_a], od_a / top, atol=0.01)
    np.testing.assert_allclose(composite[only_b], od_b / top, atol=0.01)
    assert (composite[~(a | b)] == 0).all()
    # synthesis: each cell cut out of an image where it stands alone, pasted in place (no
    # transform, no edge fade), ODs added, divided by the maximum
    cfg = config_from_params({"rotation": 0.0, "scale": [1.0, 1.0], "elastic_alpha": 0.0,
                              "edge_sigma": 0.0, "output": "additive"})
    od = np.zeros(shape + (1,), np.float32)
    for mask, value in ((a, od_a), (b, od_b)):
        cell = load_source(Sample("one", image(value * mask), [Instance(mask, "cytoplasm")])).cells[0]
        piece = make_piece(cell, 1, cfg, 0.0, np.random.default_rng(0))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        _add_clipped(od, piece.od, rows[0] - piece.offset[0], cols[0] - piece.offset[1])
    synthesised = od[..., 0] / od.max()
    np.testing.assert_allclose(composite, synthesised, atol=0.02)


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
    # no boundary pixel (no masks; one mask over the whole image, as a noise generator's
    # decoded sheet): undefined, None, which quality.json can hold (NaN made the report fail)
    whole = np.ones((1,) + shape, bool)
    for stack in (np.zeros((0,) + shape, bool), whole):
        assert edge_alignment(image, stack)["alignment"] is None
        undefined = mean_edge_alignment([image], [stack])
        assert undefined["alignment"] is None and undefined["n_boundary"] == 0
        json.dumps(undefined, allow_nan=False)


def test_texture_and_instance_fraction():
    rng = np.random.default_rng(0)
    flat = [np.full((32, 32), 0.5, np.float32)]
    noisy = [rng.uniform(0, 1, (32, 32)).astype(np.float32)]
    t_flat, t_noisy = texture_statistics(flat), texture_statistics(noisy)
    assert t_flat == {"glcm_contrast": 0.0, "glcm_homogeneity": 1.0}
    assert t_noisy["glcm_contrast"] > 50 and t_noisy["glcm_homogeneity"] < 0.3
    stripes = np.tile(np.array([0.1, 0.9], np.float32), (32, 16))  # 1 px columns
    assert texture_statistics([stripes], distances=(2,))["glcm_contrast"] < \
        texture_statistics([stripes], distances=(1,))["glcm_contrast"]
    assert instance_fraction([0, 3, 1, 0]) == 0.5
    with pytest.raises(ValueError):
        instance_fraction([])


def test_overlap_density_ratio_sees_overlaps_drawn_like_single_cells():
    """Two discs on a bright background: Beer-Lambert overlaps (OD_a + OD_b) give a ratio of
    2, overlaps drawn as dark as one cell give 1, a set without overlaps gives None."""
    yy, xx = np.mgrid[:64, :64]
    a = (yy - 32) ** 2 + (xx - 24) ** 2 <= 144
    b = (yy - 32) ** 2 + (xx - 40) ** 2 <= 144
    cell_od = 0.4
    beer_lambert = 0.9 * np.exp(-cell_od * (a.astype(float) + b))
    flat = np.where(a | b, 0.9 * np.exp(-cell_od), 0.9)
    masks = np.stack([a, b])
    assert overlap_density_ratio([beer_lambert], [masks]) == pytest.approx(2.0, rel=1e-3)
    assert overlap_density_ratio([flat], [masks]) == pytest.approx(1.0, rel=1e-3)
    assert overlap_density_ratio([flat], [masks[:1]]) is None
    # pooled over images; images without an overlap region are skipped
    assert overlap_density_ratio([beer_lambert, flat[:, :40]], [masks, masks[:1, :, :40]]) == \
        pytest.approx(2.0, rel=1e-3)


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
    assert summary["with_instances_real"] == summary["with_instances_generated"] == 1.0
    assert summary["texture_real"]["glcm_contrast"] > 0 and set(summary["texture_generated"]) == \
        {"glcm_contrast", "glcm_homogeneity"}
    # one cell per image: no overlaps to measure
    assert summary["overlap_density_ratio_real"] is None and summary["overlap_density_ratio_generated"] is None
    for condition, category in (("composite", None), ("mask", None), (None, "nucleus")):
        png, pdf = tmp_path / f"{category}{condition}.png", tmp_path / f"{category}{condition}.pdf"
        side_by_side_figure(real, ["real0", "real1"], fake, condition, png, pdf, n=2, category=category)
        assert png.stat().st_size > 1000 and pdf.read_bytes().startswith(b"%PDF")


def test_gan_never_imports_train_or_above():
    """Layers import downward only: overlapseg.gan (building blocks, layouts, reports of
    generated sets) never imports the training, evaluation or report layers."""
    import ast
    from pathlib import Path

    import overlapseg.gan

    offenders = []
    for path in sorted(Path(overlapseg.gan.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[:2] in (["overlapseg", "train"], ["overlapseg", "evaluate"],
                                                   ["overlapseg", "report"])]
    assert not offenders, offenders


def test_gan_sample_figures_show_images_with_instances_first(tmp_path):
    """Sample panels of a generated set are not blank tiles: images holding an instance of the
    generator's category come first; when too few have one, the empty panel says so."""
    from overlapseg.data.canonical import CanonicalDataset, Instance, Sample, write_canonical_dataset
    from overlapseg.gan.report import side_by_side_figure, with_instances

    yy, xx = np.mgrid[:32, :32]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 <= 16
    samples = [Sample("synthetic_empty_000", np.full((32, 32), 200, np.uint8), []),
               Sample("synthetic_nucleus_001", np.where(disc, 60, 200).astype(np.uint8),
                      [Instance(disc, "nucleus")]),
               Sample("synthetic_cell_002", np.where(disc, 120, 200).astype(np.uint8),
                      [Instance(disc, "cytoplasm")])]
    ds = CanonicalDataset(write_canonical_dataset(samples, tmp_path / "fake"))
    names = ds.names
    assert with_instances(ds, names, 2, "nucleus") == ["synthetic_nucleus_001", "synthetic_empty_000"]
    assert with_instances(ds, names, 2) == ["synthetic_nucleus_001", "synthetic_cell_002"]
    png, pdf = tmp_path / "f.png", tmp_path / "f.pdf"
    side_by_side_figure(tmp_path / "fake", names, tmp_path / "fake", None, png, pdf, n=3, category="nucleus")
    assert png.read_bytes()[:4] == b"\x89PNG"

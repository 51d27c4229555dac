"""Top-down sampling, conditional sampling, sharpening, in-painting and the evaluator."""

import numpy as np
import pytest
import torch

from dcgmm import DCGMM, PRESETS, TrainConfig, Trainer, load_dataset
from dcgmm.cli.main import main
from dcgmm.evaluation.judge import (
    frechet_distance,
    load_evaluator,
    sample_quality,
    save_evaluator,
    train_evaluator,
)
from dcgmm.generation.inpainting import inpaint, make_mask, variants
from dcgmm.generation.sampling import SamplingConfig, class_control, sample, sampling_layers
from dcgmm.generation.sharpening import Sharpening, sharpen, sharpening_chain
from dcgmm.io.images import decode_png, encode_png
from dcgmm.io.run_files import write_config
from dcgmm.training.checkpoint import save_checkpoint

from .test_gmm import random_gmm

TINY = "F(7,7)-G(4)-F(4,1)-G(9)-C(10)"


@pytest.fixture(scope="module")
def tiny_model(mnist_small):
    """A small model with a classifier, trained for 300 steps on real digits."""
    train, _ = mnist_small
    model = DCGMM.from_spec(TINY, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=300, annealing_window=20, classifier_lr=0.5, layer_delay=0.0)
    Trainer(model, config, train.images, train.labels).run()
    return model


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sampling_shapes_for_every_preset(preset):
    model = DCGMM.from_spec(preset, (28, 28, 1), generator=torch.Generator().manual_seed(0))
    config = SamplingConfig(top_s=2, noise_divisor=10.0)
    images = sample(model, 3, config=config, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 28, 28, 1)
    raw = sample(model, 3, config=config, generator=torch.Generator().manual_seed(0), clip=False)
    assert torch.equal(images, raw.clamp(0.0, 1.0))  # clip=True clips, and does nothing else


def test_every_layer_maps_its_output_shape_back_to_its_input_shape(tiny_model):
    for layer in sampling_layers(tiny_model):
        control = torch.rand(2, *layer.out_shape)
        assert layer.sample(control).shape == (2, *layer.input_shape)


def test_gmm_sample_moments_match_the_mixture(generator):
    layer = random_gmm((1, 1, 3), 4, generator)
    n = 40_000
    control = layer.weights.detach().expand(n, 1, 1, 4)  # draw components with prob. pi
    x = layer.sample(control, generator=generator, noise_divisor=1.0, noise_at_bound=True)
    x = x.reshape(n, 3)
    pi = layer.weights.detach()[:, None]
    means, var = layer.means.detach(), 1.0 / layer.precisions.detach()
    mixture_mean = (pi * means).sum(0)
    mixture_var = (pi * (var + means**2)).sum(0) - mixture_mean**2
    # Five standard errors: with the fixed generator this is one deterministic check.
    assert ((x.mean(0) - mixture_mean).abs() <= 5 * (mixture_var / n).sqrt()).all()
    fourth = (pi * (3 * var**2 + 6 * var * means**2 + means**4)).sum(0)  # crude bound
    assert ((x.var(0) - mixture_var).abs() <= 5 * (fourth / n).sqrt()).all()


def test_top_s_one_always_picks_the_argmax(generator):
    layer = random_gmm((2, 3, 5), 9, generator)
    control = torch.rand(8, 2, 3, 9, generator=generator, dtype=torch.float64)
    out = layer.sample(control, generator=generator, top_s=1)
    expected = layer.means.detach()[control.argmax(-1)]
    assert torch.equal(out, expected)


def test_sampling_is_reproducible_with_a_seeded_generator(tiny_model):
    config = SamplingConfig(top_s=3, noise_divisor=5.0, sharpening=Sharpening(iterations=3))
    a = sample(tiny_model, 5, config=config, generator=torch.Generator().manual_seed(7))
    b = sample(tiny_model, 5, config=config, generator=torch.Generator().manual_seed(7))
    c = sample(tiny_model, 5, config=config, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_conditional_sampling_walks_down_from_the_inverted_classifier(tiny_model):
    # Values: tests/test_sampling_oracles.py (exact inversion; recognised classes).
    control = class_control(tiny_model, list(range(10)), 10)
    assert control.shape == (10, 1, 1, 9)
    config = SamplingConfig(top_s=1)
    images = sample(tiny_model, 10, classes=list(range(10)), config=config)
    from dcgmm.generation.sampling import walk_down

    layers = sampling_layers(tiny_model)
    expected = walk_down(layers, len(layers) - 1, control, config, None).clamp(0, 1)
    assert torch.equal(images, expected)  # top-S 1 and no noise: deterministic


def test_conditional_sampling_errors_are_clear(tiny_model):
    with pytest.raises(ValueError, match="one class per sample"):
        sample(tiny_model, 3, classes=[1, 2])
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 9\]"):
        sample(tiny_model, 2, classes=[1, 12])
    plain = DCGMM.from_spec("F(7,7)-G(4)", (28, 28, 1))
    with pytest.raises(ValueError, match="needs a classifier layer"):
        sample(plain, 2, classes=[0, 1])


def test_sharpening_never_lowers_the_target_objective(tiny_model):
    layers = sampling_layers(tiny_model)
    config = Sharpening(iterations=25, rate=1.0)  # a large step: the safeguard must act
    chain = sharpening_chain(layers, 0, config)
    assert [type(layer).__name__ for layer in chain] == ["Folding", "GMM"]
    x0 = sample(tiny_model, 6, config=SamplingConfig(top_s=2), generator=torch.Generator())
    result = sharpen(chain, x0, config)
    assert bool((result.trace[-1] > result.trace[0]).all())  # it climbs
    # The trace is honest: J recomputed by hand at the returned signal (spec §5).
    fold, gmm = chain
    with torch.no_grad():
        by_hand = gmm.objective_map(gmm.log_joint(fold(result.values))).flatten(1).mean(1)
    torch.testing.assert_close(result.trace[-1], by_hand)
    assert torch.equal(sharpen(chain, x0, Sharpening(iterations=0)).values, x0)


def test_sampling_with_sharpening_climbs_from_the_same_draw(tiny_model):
    # The same generator draws the same top-down signal; sample() must then sharpen it, so
    # every sample's objective at the first GMM layer rises above the plain sample's.
    fold, gmm = sharpening_chain(sampling_layers(tiny_model), 0, Sharpening())

    def objective(x):
        with torch.no_grad():
            return gmm.objective_map(gmm.log_joint(fold(x))).flatten(1).mean(1)

    def draw(sharpening):
        config = SamplingConfig(top_s=2, sharpening=sharpening)
        return sample(tiny_model, 6, config=config, generator=torch.Generator().manual_seed(5))

    plain, sharp = draw(None), draw(Sharpening(iterations=25, rate=1.0))
    assert bool((objective(sharp) > objective(plain)).all())


def test_inpainting_keeps_known_pixels_bit_identical(tiny_model, mnist_small):
    _, test = mnist_small
    images = test.images[:6]
    missing = make_mask("right-half", tuple(images.shape))
    out = inpaint(tiny_model, images, missing, config=SamplingConfig(top_s=1))
    assert torch.equal(out[~missing], images[~missing])
    # Values: tests/test_inpainting_oracles.py. Here: the deep path's completion carries
    # information (measured squared error 0.069 against 0.113 for black).
    completed = inpaint(tiny_model, test.images[:100], make_mask("right-half", (100, 28, 28, 1)),
                        config=SamplingConfig(mode="mean"))  # fmt: skip
    hidden = make_mask("right-half", (100, 28, 28, 1))
    error = float(((completed - test.images[:100])[hidden] ** 2).mean())
    assert error < 0.8 * float((test.images[:100][hidden] ** 2).mean())
    with_nan = images.masked_fill(missing, float("nan"))  # the SPFlow idiom
    out_nan = inpaint(tiny_model, with_nan, config=SamplingConfig(top_s=1), layer=2)
    assert torch.equal(out_nan[~missing], images[~missing])
    assert bool(torch.isfinite(out_nan).all())
    with pytest.raises(ValueError, match="nothing to in-paint"):
        inpaint(tiny_model, images)
    with pytest.raises(ValueError, match="not a GMM layer"):
        inpaint(tiny_model, images, missing, layer=3)


def test_marginalised_inpainting_ignores_the_hidden_values(tiny_model, mnist_small):
    _, test = mnist_small
    images = test.images[:5]
    missing = make_mask("random:0.5", tuple(images.shape), generator=torch.Generator())
    config = SamplingConfig(mode="mean")  # deterministic
    dark = inpaint(tiny_model, images.masked_fill(missing, 0.0), missing, config=config)
    bright = inpaint(tiny_model, images.masked_fill(missing, 1.0), missing, config=config)
    torch.testing.assert_close(dark, bright)


def test_variants_have_the_input_shape(tiny_model, mnist_small):
    _, test = mnist_small
    out = variants(tiny_model, test.images[:4], generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 28, 28, 1)


def test_file_masks_and_bad_mask_kinds(tmp_path):
    pixels = np.zeros((10, 10), np.uint8)
    pixels[2:5, 3:7] = 255
    (tmp_path / "m.png").write_bytes(encode_png(pixels))
    from_file = make_mask(str(tmp_path / "m.png"), (1, 10, 10, 1))
    assert torch.equal(from_file[0, :, :, 0], torch.from_numpy(pixels > 0))
    with pytest.raises(ValueError, match="unknown mask"):
        make_mask("left-third", (1, 4, 4, 1))
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        make_mask("random:1.5", (1, 4, 4, 1))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png_with_every_filter(pixels: np.ndarray) -> bytes:
    """Encode with row filters 0, 1, 2, 3, 4 in turn (the PNG spec's definitions)."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    bpp = 1 if pixels.ndim == 2 else pixels.shape[2]
    rows = pixels.reshape(h, -1).astype(int)
    raw = bytearray()
    for y in range(h):
        kind, line = y % 5, rows[y]
        prior = rows[y - 1] if y else np.zeros_like(line)
        out = []
        for i, value in enumerate(line):
            left = line[i - bpp] if i >= bpp else 0
            up_left = prior[i - bpp] if i >= bpp else 0
            predict = [0, left, prior[i], (left + prior[i]) // 2,
                       _paeth(left, prior[i], up_left)][kind]  # fmt: skip
            out.append((value - predict) % 256)
        raw += bytes([kind, *out])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    color = {1: 0, 2: 4, 3: 2, 4: 6}[bpp]
    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(
        bytes(raw))) + chunk(b"IEND", b"")  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_decoder_undoes_every_row_filter(channels):
    rng = np.random.default_rng(channels)
    shape = (11, 7) if channels == 1 else (11, 7, channels)
    pixels = rng.integers(0, 256, shape).astype(np.uint8)
    assert np.array_equal(decode_png(_png_with_every_filter(pixels)), pixels)


def test_frechet_distance_matches_scipy_float64():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64)
    b = b @ torch.rand(6, 6, generator=g, dtype=torch.float64)
    b = b + 0.5
    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy().T), np.cov(b.numpy().T)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_evaluator_trains_saves_and_judges(tmp_path, mnist_small):
    _, test = mnist_small
    train = load_dataset("mnist", limit=4000)
    model = train_evaluator(train.images, train.labels, n_classes=10, epochs=3, seed=0)
    save_evaluator(tmp_path, model, {"note": "test"})
    loaded, info = load_evaluator(tmp_path)
    quality = sample_quality(loaded, test.images[:200], test.images, test.labels[:200])
    assert quality["accuracy"] > 0.85  # real test digits as "samples": measured 0.97
    counts = torch.bincount(test.labels[:200], minlength=10).double()
    per_class = torch.tensor(quality["per_class_accuracy"], dtype=torch.float64)
    assert float((per_class * counts).sum() / counts.sum()) == pytest.approx(quality["accuracy"])
    odd = test.labels[:200] % 2 == 1  # only odd digits: the even classes have no samples
    by_class = sample_quality(loaded, test.images[:200][odd], test.images[:50],
                              test.labels[:200][odd])["per_class_accuracy"]  # fmt: skip
    assert [a is None for a in by_class] == [c % 2 == 0 for c in range(10)]
    features = loaded.predict(test.images)[1]  # computed once for several sets of samples
    again = sample_quality(loaded, test.images[:200], test.images, test.labels[:200],
                           real_features=features)  # fmt: skip
    assert again["frechet_distance"] == pytest.approx(quality["frechet_distance"], rel=1e-9)
    # Same distribution: only the finite-sample bias of the covariance estimates remains.
    noise = torch.rand(200, 28, 28, 1, generator=torch.Generator().manual_seed(0))
    worse = sample_quality(loaded, noise, test.images)
    assert worse["frechet_distance"] > 10 * quality["frechet_distance"]
    assert info["n_classes"] == 10


def test_cli_generation_commands(tmp_path, tiny_model, capsys):
    run = tmp_path / "run"
    write_config(
        run,
        {"spec": TINY, "input_shape": [28, 28, 1], "objective": "annealed", "train": {},
         "data": {"source": "mnist", "classes": None, "limit_per_class": None}},
    )  # fmt: skip
    save_checkpoint(run, tiny_model, {"step": 300})
    npy, png = str(tmp_path / "s.npy"), str(tmp_path / "s.png")
    assert main(["sample", str(run), "--per-class", "3", "--top-s", "1", "--out", png,
                 "--npy", npy]) == 0  # fmt: skip
    assert np.load(tmp_path / "s.npy").shape == (30, 28, 28, 1)
    assert decode_png((tmp_path / "s.png").read_bytes()).shape[0] > 28 * 2 * 10
    assert main(["inpaint", str(run), "--data", "mnist", "--limit", "4", "--mask", "top-half",
                 "--top-s", "2:1,4:2", "--out", str(tmp_path / "i.png")]) == 0  # fmt: skip
    assert main(["train-evaluator", "--data", "mnist", "--limit", "500", "--epochs", "1",
                 "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["sample-quality", str(run), "--evaluator", str(tmp_path / "ev"),
                 "--per-class", "5", "--json"]) == 0  # fmt: skip
    result = __import__("json").loads(capsys.readouterr().out)
    assert result["conditional"] is True
    assert result["n_samples"] == 50
    # The reported accuracy is the judge's verdict on the samples the flags ask for.
    judge, _ = load_evaluator(tmp_path / "ev")
    intended = torch.arange(10).repeat_interleave(5)
    drawn = sample(tiny_model, 50, classes=intended, config=SamplingConfig(),
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    expected = float((judge(drawn).argmax(1) == intended).double().mean())
    assert result["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert main(["sample", str(run), "--top-s", "x:y", "--out", str(tmp_path / "bad.png")]) == 2
    assert main(["sample-quality", str(run), "--evaluator", str(tmp_path / "none")]) == 2


def test_classifier_score_bounds():
    from dcgmm.evaluation.judge import classifier_score

    uniform = torch.full((100, 10), 0.1)
    assert classifier_score(uniform)[0] == pytest.approx(1.0, abs=1e-12)
    confident = torch.eye(10).repeat(10, 1)  # every class equally often, certain each time
    assert classifier_score(confident)[0] == pytest.approx(10.0, rel=1e-9)
    with pytest.raises(ValueError, match="probabilities"):
        classifier_score(torch.ones(3, 10) / 10)


def test_the_papers_judge_has_its_table_vii_layers_and_round_trips(tmp_path, mnist_small):
    from dcgmm.evaluation.judge import PaperJudge

    train, test = mnist_small
    judge = train_evaluator(train.images[:200], train.labels[:200], n_classes=10, epochs=1,
                            architecture="paper")  # fmt: skip
    assert isinstance(judge, PaperJudge)
    convs = [m for m in judge.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 64, (3, 3)), (64, 64, (3, 3)), (64, 64, (3, 3)), (64, 64, (3, 3))
    ]  # fmt: skip
    dense = [m.out_features for m in judge.dense]
    assert dense == [350, 350, 350]
    assert judge.dense[0].in_features == 64 * 3 * 3  # 28 -> 14 -> 7 -> 3 after three pools
    save_evaluator(tmp_path, judge, {"note": "paper"})
    loaded, info = load_evaluator(tmp_path)
    assert info["architecture"] == "paper"
    assert torch.equal(loaded.predict(test.images[:20])[0], judge.predict(test.images[:20])[0])
    with pytest.raises(ValueError, match="architecture must be one of"):
        train_evaluator(train.images[:10], train.labels[:10], n_classes=10, architecture="big")

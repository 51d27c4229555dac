"""Value oracles for in-painting: mask geometry, the exact completion of a flat GMM, quality on
real digits against a trivial baseline, and the NSN's occlusion filling against a naive loop."""

import inspect
import math

import numpy as np
import pytest
import torch

from dcgmm import DCGMM
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.nsn_layer import GenSettings
from dcgmm.generation.inpainting import inpaint, make_mask
from dcgmm.generation.sampling import SamplingConfig

F64 = torch.float64

# Every named mask on a 5 x 7 image (odd sides, not square: a floor division or a swapped
# axis shows), drawn by hand: '#' marks a missing pixel.
MASKS = {
    "right-half": ["...####"] * 5,
    "left-half": ["###...."] * 5,
    "top-half": ["#######", "#######", ".......", ".......", "......."],
    "bottom-half": [".......", ".......", "#######", "#######", "#######"],
    "center": [".......", ".###...", ".###...", ".......", "......."],
}


def test_the_center_mask_is_the_middle_half_of_each_side():
    # 9 x 13: a quarter of each side is 2 and 3 (a fifth would be 1 and 2, as on 5 x 7).
    mask = make_mask("center", (1, 9, 13, 1))[0, :, :, 0]
    expected = torch.zeros(9, 13, dtype=torch.bool)
    expected[2:6, 3:9] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_named_masks_are_the_drawn_pixels_on_a_non_square_image(kind):
    expected = torch.tensor([[ch == "#" for ch in row] for row in MASKS[kind]])
    mask = make_mask(kind, (3, 5, 7, 2))
    assert mask.dtype == torch.bool
    assert mask.shape == (3, 5, 7, 2)
    for n in range(3):
        for c in range(2):
            assert torch.equal(mask[n, :, :, c], expected), f"image {n}, channel {c}"


def test_random_masks_hide_whole_pixels_independently_at_the_rate_asked():
    n, h, w, p = 400, 7, 9, 0.3
    mask = make_mask(f"random:{p}", (n, h, w, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask[..., 0], mask[..., 1])  # a pixel hides all its channels
    assert torch.equal(mask[..., 0], mask[..., 2])
    hidden = mask[..., 0].double()
    total = n * h * w
    # Binomial(total, p): five standard deviations.
    assert abs(float(hidden.sum()) - p * total) < 5 * math.sqrt(total * p * (1 - p))
    # Independent images and positions: no two images share their mask.
    flat = hidden.reshape(n, -1)
    assert torch.unique(flat, dim=0).shape[0] == n
    per_position = hidden.mean(0)  # 400 draws each
    assert float((per_position - p).abs().max()) < 5 * math.sqrt(p * (1 - p) / n)


def test_random_masks_follow_the_generator_and_refuse_probabilities_outside_0_1():
    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(100)  # the same global state for every seed: it must not matter
        return make_mask("random:0.5", (4, 6, 6, 1), generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    for p in ("0", "1", "0.0", "1.0", "-0.5", "2"):
        with pytest.raises(ValueError, match=r"random mask probability must lie in \(0, 1\)"):
            make_mask(f"random:{p}", (1, 6, 6, 1))
    with pytest.raises(ValueError, match=r"random mask needs a probability, e.g. random:0.5"):
        make_mask("random:half", (1, 6, 6, 1))


def flat_gmm(side: int, k: int, seed: int) -> DCGMM:
    g = torch.Generator().manual_seed(seed)
    model = DCGMM.from_spec(f"F({side},1)-G({k})", (side, side, 1), generator=g).double()
    gmm = model.layers[1]
    with torch.no_grad():
        gmm.logits.normal_(generator=g)
        gmm.means.uniform_(0.1, 0.9, generator=g)
        gmm.sqrt_precisions.uniform_(1.0, 3.0, generator=g)
    return model


def conditional_expectation(model: DCGMM, x: torch.Tensor, observed: torch.Tensor):
    """Float64 brute force: posterior over components from the observed pixels only.

    Returns ``(sum_k r_k mu_k, mu_argmax r)`` as flat vectors, one per image.
    """
    gmm = model.layers[1]
    means, prec = gmm.means.detach(), gmm.precisions.detach()
    log_pi = torch.log_softmax(gmm.logits.detach(), 0)
    expected, argmax = [], []
    for row, seen in zip(x.reshape(len(x), -1), observed.reshape(len(x), -1), strict=True):
        log_post = []
        for k in range(means.shape[0]):
            diff = (row - means[k])[seen]
            p = prec[k][seen]
            log_density = 0.5 * (
                torch.log(p).sum() - (p * diff * diff).sum() - seen.sum() * math.log(2 * math.pi)
            )
            log_post.append(log_pi[k] + log_density)
        r = torch.softmax(torch.stack(log_post), 0)
        expected.append((r[:, None] * means).sum(0))
        argmax.append(means[r.argmax()])
    return torch.stack(expected), torch.stack(argmax)


@pytest.mark.parametrize("kind", ["right-half", "center", "random:0.4"])
def test_a_flat_gmm_completes_with_the_exact_conditional_expectation(kind):
    model = flat_gmm(6, 9, seed=1)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(5, 6, 6, 1, generator=g, dtype=F64)
    missing = make_mask(kind, tuple(images.shape), generator=g)
    expected, argmax = conditional_expectation(model, images, ~missing)
    hidden = missing.reshape(5, -1)
    mean_fill = inpaint(model, images, missing, config=SamplingConfig(mode="mean"))
    torch.testing.assert_close(
        mean_fill.reshape(5, -1)[hidden], expected[hidden], rtol=1e-10, atol=1e-12
    )
    best_fill = inpaint(model, images, missing, config=SamplingConfig(top_s=1))
    torch.testing.assert_close(best_fill.reshape(5, -1)[hidden], argmax[hidden], rtol=0, atol=0)
    for out in (mean_fill, best_fill):
        assert torch.equal(out[~missing], images[~missing])


def test_the_authors_fill_reads_the_hidden_pixels_as_the_fill_value():
    model = flat_gmm(6, 9, seed=3)
    g = torch.Generator().manual_seed(4)
    images = torch.rand(4, 6, 6, 1, generator=g, dtype=F64)
    missing = make_mask("left-half", tuple(images.shape))
    filled_with = images.masked_fill(missing, 0.25)
    everything = torch.ones_like(missing)  # all pixels observed, hidden ones at 0.25
    expected, _ = conditional_expectation(model, filled_with, everything)
    out = inpaint(model, images, missing, config=SamplingConfig(mode="mean"),
                  marginalize=False, fill=0.25)  # fmt: skip
    hidden = missing.reshape(4, -1)
    torch.testing.assert_close(out.reshape(4, -1)[hidden], expected[hidden], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["right-half", "left-half", "top-half", "bottom-half", "center"])
def test_completions_of_real_digits_beat_the_mean_training_digit(
    annealed_flat_model, mnist_small, kind
):
    train, test = mnist_small
    images = test.images[:200]
    missing = make_mask(kind, tuple(images.shape))
    completed = inpaint(annealed_flat_model, images, missing, config=SamplingConfig(mode="mean"))
    error = float(((completed - images)[missing] ** 2).mean())
    baseline = float(((train.images.mean(0).expand_as(images) - images)[missing] ** 2).mean())
    # Measured on right-half: 0.057 against the mean digit's 0.069 (and 0.113 for zeros).
    assert error < 0.93 * baseline, (error, baseline)


def naive_nsn_scores(patch, means, sigmas):
    """sigmoid of the per-dimension log-pdf of one patch under every filter (spec eq. 1)."""
    d = patch.numel()
    out = []
    for mu, sigma in zip(means, sigmas, strict=True):
        sq = ((patch - mu) ** 2).sum()
        out.append(-sq / (2 * d * sigma**2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi))
    return torch.sigmoid(torch.stack(out))


def naive_generate(phi, means, beta, alpha):
    """NSN-Gen of one position with infinitely many draws and no noise: alpha E_w[mu]."""
    return alpha * (torch.softmax(beta * phi, 0)[:, None] * means).sum(0)


def test_nsn_occlusion_filling_matches_a_naive_loop():
    """A 6x6 image, layers F(2,2) (a 3x3 map of 3 filters) and F(3,1) (one 1x1 vector of 4)."""
    g = torch.Generator().manual_seed(0)
    k1, k2 = 3, 4
    model = NSN((6, 6, 1), [(2, 2), (3, 1)])
    state = {
        "layers.0.means": torch.rand(k1, 4, generator=g, dtype=F64),
        "layers.0.sigmas": 0.4 + torch.rand(k1, generator=g, dtype=F64),
        "layers.0.counts": torch.ones(k1, dtype=F64),
        "layers.1.means": torch.rand(k2, 9 * k1, generator=g, dtype=F64),
        "layers.1.sigmas": 0.4 + torch.rand(k2, generator=g, dtype=F64),
        "layers.1.counts": torch.ones(k2, dtype=F64),
    }
    model.load_filters(state)
    model = model.double()
    x = torch.rand(1, 6, 6, 1, generator=g, dtype=F64)
    missing = torch.zeros(1, 6, 6, 1, dtype=torch.bool)
    missing[0, 0:3, 3:6] = True  # the top-right 3x3 block
    settings = GenSettings(beta=2.0, n_draws=0, alpha=0.9, gamma=0.0)  # deterministic

    first, second = model.nsn_layers  # the filters as stored (float32, widened again)
    m1, s1, m2, s2 = first.means, first.sigmas, second.means, second.sigmas
    seen = torch.where(missing, torch.zeros_like(x), x)[0, :, :, 0]
    f1 = torch.zeros(3, 3, k1, dtype=F64)
    for i in range(3):
        for j in range(3):
            patch = seen[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(4)  # (dy, dx) row-major
            f1[i, j] = naive_nsn_scores(patch, m1, s1)
    f2 = naive_nsn_scores(f1.reshape(9 * k1), m2, s2)  # (dy, dx, k): the folding's order
    rebuilt = naive_generate(f2, m2, 2.0, 0.9).reshape(3, 3, k1)
    hidden = missing[0, :, :, 0]
    pixels = torch.zeros(6, 6, dtype=F64)
    for i in range(3):
        for j in range(3):
            touched = bool(hidden[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].any())
            phi = rebuilt[i, j] if touched else f1[i, j]
            window = naive_generate(phi, m1, 2.0, 0.9).reshape(2, 2)
            pixels[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = window  # stride = window: no overlap
    expected = torch.where(hidden, pixels.clamp(0, 1), x[0, :, :, 0])

    out = model.inpaint(x, missing, settings)
    torch.testing.assert_close(out[0, :, :, 0], expected, rtol=1e-10, atol=1e-12)
    # The hidden pixels' values are never read.
    torch.testing.assert_close(model.inpaint(x.masked_fill(missing, 1.0), missing, settings), out)


@pytest.mark.parametrize("suffix", [".png", ".PNG", ".npy", ".NPY"])
def test_mask_files_mark_their_non_zero_pixels(tmp_path, suffix):
    from dcgmm.io.images import encode_png

    hidden = torch.tensor([[ch == "#" for ch in row] for row in MASKS["center"]])
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = hidden.numpy() * 255  # the first channel marks the missing pixels
    rgb[..., 1] = 255 - rgb[..., 0]  # and the others must not be read
    path = tmp_path / f"mask{suffix}"
    if suffix.lower() == ".npy":
        np.save(tmp_path / "mask.npy", rgb)
        (tmp_path / "mask.npy").rename(path)
    else:
        path.write_bytes(encode_png(rgb))
    mask = make_mask(str(path), (2, 5, 7, 1))
    assert torch.equal(mask[1, :, :, 0], hidden)


def test_mask_file_errors_name_the_file_and_the_sizes(tmp_path):
    from dcgmm.exceptions import DataError

    with pytest.raises(DataError, match=r"mask file .*nothere.png does not exist"):
        make_mask(str(tmp_path / "nothere.png"), (1, 5, 7, 1))
    np.save(tmp_path / "small.npy", np.ones((4, 6), np.uint8))
    with pytest.raises(DataError, match=r"small.npy is 4x6; images are \(5, 7\)"):
        make_mask(str(tmp_path / "small.npy"), (1, 5, 7, 1))


def test_variants_redraw_from_the_chosen_layers_reading(generator):
    from dcgmm.generation.inpainting import variants

    model = DCGMM.from_spec("F(2,1)-G(4)-F(2,1)-G(4)", (3, 3, 1), generator=generator).double()
    x = torch.rand(5, 3, 3, 1, generator=generator, dtype=F64)
    fold1, gmm1, fold2, gmm2 = model.layers
    mean = SamplingConfig(mode="mean")
    with torch.no_grad():
        # From layer 2 (the first GMM): its responsibilities, their expected means, unfolded.
        resp1 = gmm1(fold1(x))
        expected_low = fold1.sample(gmm1.sample(resp1, expected=True)).clamp(0, 1)
        # From layer 4 (the top): up through both, then down through both.
        resp2 = gmm2(fold2(resp1))
        down = fold2.sample(gmm2.sample(resp2, expected=True))
        expected_top = fold1.sample(gmm1.sample(down, expected=True)).clamp(0, 1)
    torch.testing.assert_close(variants(model, x, layer=2, config=mean), expected_low)
    torch.testing.assert_close(variants(model, x, config=mean), expected_top)
    drawn = [variants(model, x, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(drawn[0], drawn[1])  # the generator is the only randomness
    with pytest.raises(ValueError, match="values in images; expected finite pixels"):
        variants(model, x.masked_fill(x > 0.5, float("nan")))


def test_inpainting_layers_are_named_as_dcgmm_info_numbers_them(generator):
    # A GMM layer straight on the pixels, then a folding and a second GMM: layers 1 and 3.
    model = DCGMM.from_spec("G(4)-F(2,1)-G(4)", (3, 3, 1), generator=generator).double()
    x = torch.rand(2, 3, 3, 1, generator=generator, dtype=F64)
    missing = make_mask("left-half", tuple(x.shape))
    for layer in (1, 3, None):
        out = inpaint(model, x, missing, layer=layer, config=SamplingConfig(mode="mean"))
        assert torch.equal(out[~missing], x[~missing])
    low = inpaint(model, x, missing, layer=1, config=SamplingConfig(mode="mean"))
    gmm = model.layers[0]
    with torch.no_grad():  # layer 1 alone: its own marginalised reading, its expected means
        resp = torch.softmax(gmm.log_joint(x.masked_fill(missing, 0.0), missing), -1)
        expected = gmm.sample(resp, expected=True).clamp(0, 1)
    torch.testing.assert_close(low[missing], expected[missing])
    with pytest.raises(
        ValueError, match=r"layer 2 is not a GMM layer of .*; GMM layers .*: \[1, 3\]"
    ):
        inpaint(model, x, missing, layer=2)
    with pytest.raises(ValueError, match=r"layer 4 is not a GMM layer"):
        inpaint(model, x, missing, layer=4)
    with pytest.raises(ValueError, match=r"layer 0 is not a GMM layer"):
        inpaint(model, x, missing, layer=0)


def test_a_gmm_position_is_missing_only_when_all_its_entries_are():
    from dcgmm.layers import GMM

    missing = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    missing[0, 0, 0] = True  # all three entries
    missing[0, 0, 1, :2] = True  # two of three
    out = GMM((2, 2, 3), 4).propagate_missing(missing)
    assert out.shape == (1, 2, 2, 4)
    assert out[0, :, :, 0].tolist() == [[True, False], [False, False]]
    assert bool((out == out[..., :1]).all())  # the same for every component


def test_completions_are_clipped_to_pixels(generator):
    from dcgmm.generation.inpainting import upward_with_missing
    from dcgmm.generation.sampling import sampling_layers, walk_down

    model = flat_gmm(6, 9, seed=5)
    with torch.no_grad():
        model.layers[1].sqrt_precisions.fill_(1.0)
    x = torch.rand(4, 6, 6, 1, generator=generator, dtype=F64)
    missing = make_mask("center", tuple(x.shape))
    config = SamplingConfig(noise_divisor=0.5)  # noise far beyond [0, 1]
    out = inpaint(model, x, missing, config=config, generator=torch.Generator().manual_seed(2))
    layers = sampling_layers(model)
    index = model.gmm_layer_number(None) - 1
    control = upward_with_missing(layers, index, x.masked_fill(missing, 0.0), missing)
    raw = walk_down(layers, index, control, config, torch.Generator().manual_seed(2))
    assert float(raw.detach()[missing].min()) < 0.0 < 1.0 < float(raw.detach()[missing].max())
    torch.testing.assert_close(out, torch.where(missing, raw.clamp(0, 1), x))


def test_without_marginalising_hidden_pixels_read_as_zero_by_default():
    # The authors' code: hidden pixels enter the bottom-up pass as 0 (fill's default).
    model = flat_gmm(6, 9, seed=7)
    x = torch.rand(3, 6, 6, 1, dtype=F64, generator=torch.Generator().manual_seed(8))
    missing = make_mask("left-half", tuple(x.shape))
    config = SamplingConfig(mode="mean")
    default = inpaint(model, x, missing, config=config, marginalize=False)
    zeros = inpaint(model, x.masked_fill(missing, 0.0), missing, config=config, fill=0.0,
                    marginalize=False)  # fmt: skip
    ones = inpaint(model, x, missing, config=config, fill=1.0, marginalize=False)
    torch.testing.assert_close(default, zeros, rtol=0, atol=0)
    assert not torch.allclose(default, ones)  # fill acts: it is not a no-op


def test_missing_masks_must_be_bool_and_broadcast():
    model = flat_gmm(6, 9, seed=6)
    x = torch.rand(2, 6, 6, 1, dtype=F64)
    with pytest.raises(TypeError, match=r"missing must be a bool tensor, .*; got torch.float32"):
        inpaint(model, x, torch.zeros(2, 6, 6, 1))
    bare = inspect.unwrap(inpaint)  # past the suite's type-check hook, as an untyped caller
    with pytest.raises(TypeError, match=r"missing must be a bool tensor, .*; got list"):
        bare(model, x, [[True]])
    per_pixel = torch.zeros(1, 6, 6, 1, dtype=torch.bool)
    per_pixel[0, :3] = True
    out = inpaint(model, x, per_pixel, config=SamplingConfig(mode="mean"))  # broadcast over N
    assert torch.equal(out[:, 3:], x[:, 3:])
    with pytest.raises(ValueError, match=r"missing has shape \(1, 5, 6, 1\); expected the images"):
        inpaint(model, x, torch.zeros(1, 5, 6, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"images must be NHWC with shape \(N, 6, 6, 1\)"):
        inpaint(model, x[:, :5], per_pixel[:, :5])
    with pytest.raises(ValueError, match=r"nothing to in-paint: pass a boolean mask as missing="):
        inpaint(model, x)
    hidden_inf = x.masked_fill(per_pixel.expand_as(x), float("inf"))
    inpaint(model, hidden_inf, per_pixel)  # what is hidden is never read
    known_inf = x.masked_fill(~per_pixel.expand_as(x), float("inf"))
    with pytest.raises(ValueError, match=r"values in images; expected finite pixels"):
        inpaint(model, known_inf, per_pixel)


@pytest.mark.parametrize(
    "spec",
    [
        "F(3,1)-G(4)-F(4,2)-G(4)",  # shared layers: folded convolutions
        "F(3,1)-G(4,indep)-F(4,2)-G(9,indep)",  # independent layers: grouped products
        "F(3,1)-G(4)-P(2,2)-F(2,1)-G(4,indep)-G(4)",  # pooling, an unfused GMM on top
        "F(10,1)-G(9)",  # one window: no fused stage at all
    ],
)
@pytest.mark.parametrize("mask", ["center", "random:0.4"])
@pytest.mark.parametrize("one_row_chunks", [False, True])
def test_fused_upward_pass_marginalises_as_the_layers_do(spec, mask, one_row_chunks, monkeypatch):
    """The stages' masked log-joints (in-painting's fast path) against the layer-by-layer one."""
    from dcgmm.generation.inpainting import upward_observed, upward_with_missing
    from dcgmm.generation.sampling import sampling_layers
    from dcgmm.stages import independent as independent_stage

    if one_row_chunks:  # an independent layer's windows cut one output row at a time
        monkeypatch.setattr(independent_stage, "WINDOW_CHUNK_BYTES", 1)

    g = torch.Generator().manual_seed(3)
    model = DCGMM.from_spec(spec, (10, 10, 1), generator=g).double()
    with torch.no_grad():  # filters that tell the windows apart, not the initial ones
        for _, gmm in model.gmm_layers():
            gmm.means.copy_(torch.rand(gmm.means.shape, generator=g, dtype=F64))
            gmm.sqrt_precisions.copy_(1 + 2 * torch.rand(gmm.means.shape, generator=g, dtype=F64))
    x = torch.rand(5, 10, 10, 1, generator=g, dtype=F64)
    missing = make_mask(mask, tuple(x.shape), generator=torch.Generator().manual_seed(4))
    known = x.masked_fill(missing, 0.0)
    layers = sampling_layers(model)
    for _, layer_index in enumerate(i for i, _ in model.gmm_layers()):
        index = model.gmm_layer_number(layer_index + 1) - 1
        expected = upward_with_missing(layers, index, known, missing)
        got = upward_observed(model, index, known, missing)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_fused_upward_pass_in_float32_within_rounding_of_float64():
    """The CPU float32 path (oneDNN's grouped convolution for wide windows) against float64."""
    from dcgmm.generation.inpainting import upward_observed, upward_with_missing
    from dcgmm.generation.sampling import sampling_layers

    g = torch.Generator().manual_seed(5)
    model = DCGMM.from_spec("F(3,1)-G(4,indep)-F(4,2)-G(9,indep)", (10, 10, 1), generator=g)
    x = torch.rand(6, 10, 10, 1, generator=g)
    missing = make_mask("random:0.3", tuple(x.shape), generator=torch.Generator().manual_seed(6))
    known = x.masked_fill(missing, 0.0)
    got = upward_observed(model, 3, known, missing)
    reference = model.double()
    expected = upward_with_missing(sampling_layers(reference), 3, known.double(), missing)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_pooling_and_folding_move_the_missing_mask_as_their_windows_say():
    from dcgmm.layers import Folding, MaxPooling

    missing = torch.zeros(1, 4, 4, 1, dtype=torch.bool)
    missing[0, :2, :2] = True  # the whole top-left 2x2 window
    missing[0, 2, 2] = True  # one entry of the bottom-right window
    pooled = MaxPooling((4, 4, 1), 2, 2).propagate_missing(missing)
    assert pooled[0, :, :, 0].tolist() == [[True, False], [False, False]]  # any observed: observed
    folded = Folding((4, 4, 1), (2, 2), (2, 2)).propagate_missing(missing)
    assert folded.shape == (1, 2, 2, 4)
    assert folded[0, 0, 0].tolist() == [True] * 4  # entries are copied, one by one
    assert folded[0, 1, 1].tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    "spec",
    ["F(3,1)-G(4)-F(4,2)-G(9)", "F(3,1)-G(4,indep)-F(4,2)-G(9,indep)", "F(2,3)-G(4)-F(2,1)-G(4)"],
)
def test_a_stage_passes_on_the_missing_mask_its_layers_would(spec):
    g = torch.Generator().manual_seed(2)
    model = DCGMM.from_spec(spec, (12, 12, 2), generator=g)
    # Sparse holes and a large hidden block: windows fully hidden, partly hidden and seen.
    missing = torch.rand(3, 12, 12, 2, generator=g) < 0.3
    missing[:, 2:9, 3:10] = True
    for stage in model.stages:
        expected = missing
        for layer in stage.layers:
            expected = layer.propagate_missing(expected)
        got = stage.propagate_missing(missing)
        assert got.shape == expected.shape
        assert torch.equal(got, expected), f"stage {stage.index} of {spec}"
        assert bool(got.any()), "the test needs windows that are all missing"
        assert not bool(got.all()), "the test needs windows with something observed"
        missing = expected

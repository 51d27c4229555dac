"""Value oracles for top-down sampling: what each knob does, against counts and closed forms.

Noise-free draws emit a component's mean exactly, so the component behind every output can
be read back by matching it to the means; the counts are then compared with the
probabilities the spec prescribes by a chi-square test. Every generator is seeded, so each
check is one deterministic draw; the p-value floor of 1e-4 states how unlikely a correct
sampler is to land there. The bugs these guard against move whole components to probability
0 (or back), which puts the p-value below 1e-100.
"""

import inspect
import math

import pytest
import torch
from scipy.stats import chisquare

from dcgmm import DCGMM
from dcgmm._numerics import SQRT_PRECISION_UPPER_BOUND
from dcgmm.generation.sampling import SamplingConfig, class_control, sample
from dcgmm.generation.sharpening import Sharpening, sharpen, sharpening_chain
from dcgmm.layers import GMM, Folding, LinearClassifier

N_DRAWS = 20_000
P_FLOOR = 1e-4


def drawn_components(means: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Return the index of the component whose mean each output row is (exactly)."""
    rows = out.detach().reshape(-1, means.shape[-1])
    distance = ((rows[:, None, :] - means[None]) ** 2).sum(-1)
    nearest = distance.min(-1)
    assert float(nearest.values.max()) == 0.0, "a noise-free draw must be a component mean"
    return nearest.indices


def assert_frequencies(index: torch.Tensor, probabilities: list[float]) -> None:
    """Components of probability 0 never drawn; the others at their rates (chi-square)."""
    k = len(probabilities)
    counts = torch.bincount(index, minlength=k).double()
    p = torch.tensor(probabilities, dtype=torch.float64)
    p = p / p.sum()
    assert counts[p == 0].sum() == 0, f"drawn although excluded: {counts.tolist()}"
    kept = p > 0
    if int(kept.sum()) == 1:
        return  # one component left: the zero counts above are the whole check
    expected = p[kept] * counts.sum()
    result = chisquare(counts[kept].numpy(), expected.numpy())
    assert result.pvalue > P_FLOOR, f"counts {counts.tolist()} vs expected {expected.tolist()}"


def random_gmm(shape, k, generator, *, independent=False):
    """A float64 layer with distinct random parameters (any K: no annealing torus needed)."""
    layer = GMM(shape, k, independent=independent, objective="max_component").double()
    with torch.no_grad():
        layer.logits.normal_(generator=generator)
        layer.means.uniform_(0, 1, generator=generator)
        layer.sqrt_precisions.uniform_(0.5, 4.0, generator=generator)
    return layer


def one_position_layer(k: int, generator: torch.Generator):
    return random_gmm((1, 1, 3), k, generator)


def control_rows(values: list[float], n: int = N_DRAWS) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).expand(n, 1, 1, len(values))


@pytest.mark.parametrize(
    ("control", "top_s", "expected"),
    [
        # All tied (the top layer's uniform start): top-S keeps every component.
        ([1.0] * 6, 2, [1.0] * 6),
        # Ties at the S-th largest value are kept: 5 and all three 3s.
        ([5.0, 3.0, 3.0, 3.0, 1.0, 0.0], 2, [5.0, 3.0, 3.0, 3.0, 0.0, 0.0]),
        # No ties: exactly the S largest, drawn in proportion to their scores.
        ([0.5, 4.0, 1.0, 3.0, 2.0, 0.25], 3, [0.0, 4.0, 0.0, 3.0, 2.0, 0.0]),
        ([0.5, 4.0, 1.0, 3.0, 2.0, 0.25], 1, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
        # No top-S: every component in proportion; negative scores count as 0.
        ([0.5, 4.0, -1.0, 3.0, 2.0, 0.0], None, [0.5, 4.0, 0.0, 3.0, 2.0, 0.0]),
    ],
)
def test_top_s_draws_the_kept_components_in_proportion_to_their_scores(
    generator, control, top_s, expected
):
    layer = one_position_layer(len(control), generator)
    out = layer.sample(control_rows(control), generator=generator, top_s=top_s)
    assert_frequencies(drawn_components(layer.means.detach(), out), expected)


@pytest.mark.parametrize("top_s", [1, 2, None])
def test_draws_among_tied_components_follow_the_generator(top_s):
    # Every component tied (the top layer's uniform start): the draw is a random choice, and
    # the same generator seed must give the same samples, a different seed different ones.
    layer = one_position_layer(6, torch.Generator().manual_seed(3))
    control = control_rows([1.0] * 6, n=200)

    def draw(seed: int) -> torch.Tensor:
        torch.manual_seed(100)  # the same global state for every seed: it must not matter
        return layer.sample(control, generator=torch.Generator().manual_seed(seed), top_s=top_s)

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_top_s_applies_per_position_of_an_independent_layer(generator):
    layer = random_gmm((1, 2, 3), 4, generator, independent=True)
    control = torch.tensor([[3.0, 3.0, 2.0, 1.0], [1.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    out = layer.sample(control.expand(N_DRAWS, 1, 2, 4), generator=generator, top_s=1)
    assert_frequencies(drawn_components(layer.means.detach()[0, 0], out[:, :, 0]), [1, 1, 0, 0])
    assert_frequencies(drawn_components(layer.means.detach()[0, 1], out[:, :, 1]), [1, 0, 1, 1])


@pytest.mark.parametrize("divisor", [0.5, 4.0])
def test_noise_has_standard_deviation_one_over_sqrt_precision_times_divisor(generator, divisor):
    layer = random_gmm((1, 1, 4), 3, generator)
    with torch.no_grad():  # dimension 3 sits at the precision bound (a constant pixel)
        layer.sqrt_precisions.copy_(torch.tensor([[1.0, 2.5, 0.8, SQRT_PRECISION_UPPER_BOUND]] * 3))
    n = 40_000
    control = control_rows([0.0, 1.0, 0.0], n)  # always component 1
    mean = layer.means.detach()[1]
    noise = layer.sample(control, generator=generator, noise_divisor=divisor)[:, 0, 0] - mean
    expected_std = 1.0 / (layer.sqrt_precisions.detach()[1] * divisor)
    std = noise.std(0)
    # The sample std of n normal draws has standard error std / sqrt(2n): five of them.
    assert (noise[:, :3].mean(0).abs() <= 5 * expected_std[:3] / math.sqrt(n)).all()
    torch.testing.assert_close(std[:3], expected_std[:3], rtol=5 / math.sqrt(2 * n), atol=0)
    assert torch.equal(noise[:, 3], torch.zeros(n, dtype=noise.dtype))  # no speckle there
    at_bound = layer.sample(control, generator=generator, noise_divisor=divisor,
                            noise_at_bound=True)[:, 0, 0, 3] - mean[3]  # fmt: skip
    torch.testing.assert_close(at_bound.std(), expected_std[3], rtol=5 / math.sqrt(2 * n), atol=0)


def test_sample_passes_noise_at_bound_to_every_gmm_layer(generator):
    # A flat model whose pixel 0 sits at the precision bound: sample() adds noise there only
    # with noise_at_bound=True (the other pixels get noise either way).
    model = DCGMM.from_spec("F(2,1)-G(4)", (2, 2, 1), generator=generator).double()
    gmm = model.layers[1]
    with torch.no_grad():
        gmm.sqrt_precisions.copy_(torch.tensor([[SQRT_PRECISION_UPPER_BOUND, 2.0, 2.0, 2.0]] * 4))
        gmm.means.fill_(0.5)
    for at_bound in (False, True):
        config = SamplingConfig(noise_divisor=4.0, noise_at_bound=at_bound)
        x = sample(model, 200, config=config, generator=generator).flatten(1)
        assert bool((x[:, 1:] != 0.5).all())
        assert bool((x[:, 0] != 0.5).all()) if at_bound else bool((x[:, 0] == 0.5).all())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_s": 0}, r"top_s must be positive or None; got 0 for layer all"),
        ({"top_s": {2: 1, 4: 0}}, r"top_s must be positive or None; got 0 for layer 4"),
        ({"noise_divisor": 0.0}, r"noise_divisor must be positive or None; got 0.0 for layer all"),
        ({"noise_divisor": {3: -1.0}}, r"noise_divisor must be .*; got -1.0 for layer 3"),
    ],
)
def test_sampling_settings_refuse_zero_and_negative_values_naming_the_layer(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_sampling_needs_a_gmm_layer_on_top():
    for spec in ("F(4,2)-G(4)-F(2,1)", "F(4,2)-G(4)-F(2,1)-C(3)"):
        with pytest.raises(ValueError, match=r"has no GMM layer on top to start sampling from"):
            sample(DCGMM.from_spec(spec, (6, 6, 1)), 2)


def test_expected_mode_emits_the_control_weighted_mean_after_top_s(generator):
    layer = random_gmm((2, 1, 3), 5, generator)
    control = torch.rand(4, 2, 1, 5, generator=generator, dtype=torch.float64)
    control[0, 0] = torch.tensor([2.0, 2.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # a tie
    out = layer.sample(control, top_s=2, expected=True)
    means = layer.means.detach()
    for n in range(4):
        for h in range(2):
            scores = control[n, h, 0].tolist()
            threshold = sorted(scores, reverse=True)[1]
            weights = [s if s >= threshold else 0.0 for s in scores]
            total = sum(weights)
            expected = sum(w / total * means[k] for k, w in enumerate(weights))
            torch.testing.assert_close(out[n, h, 0], expected, rtol=1e-12, atol=1e-12)


def flat_model(logits: list[float], generator: torch.Generator) -> DCGMM:
    """A one-position model ``F(2,2)-G(K)`` on 2x2 images with the given mixing logits."""
    model = DCGMM.from_spec(f"F(2,2)-G({len(logits)})", (2, 2, 1), generator=generator)
    gmm = model.layers[1]
    with torch.no_grad():
        gmm.logits.copy_(torch.tensor(logits))
        gmm.means.uniform_(0.05, 0.95, generator=generator)
    return model


@pytest.mark.parametrize("start", ["uniform", "weights"])
def test_the_top_layer_starts_uniform_or_from_its_mixing_weights(generator, start):
    logits = [2.0, 0.0, -1.0, 1.0]
    model = flat_model(logits, generator)
    images = sample(model, N_DRAWS, config=SamplingConfig(start=start), generator=generator)
    index = drawn_components(model.layers[1].means.detach(), images.reshape(N_DRAWS, 4))
    expected = torch.softmax(torch.tensor(logits), 0).tolist() if start == "weights" else [1] * 4
    assert_frequencies(index, expected)


def test_per_layer_knobs_reach_the_layer_they_name(generator):
    model = flat_model([0.0] * 4, generator)
    # GMM layer 2 (as `dcgmm info` numbers it) gets top-S 1; a mapping for a layer that does
    # not exist would leave it unrestricted.
    config = SamplingConfig(top_s={2: 1}, start="weights")
    images = sample(model, 200, config=config, generator=generator)
    index = drawn_components(model.layers[1].means.detach(), images.reshape(200, 4))
    assert index.unique().numel() == 4  # all weights tie at 1/4: all kept, as top-S keeps ties
    with torch.no_grad():
        model.layers[1].logits.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    images = sample(model, 200, config=config, generator=generator)
    index = drawn_components(model.layers[1].means.detach(), images.reshape(200, 4))
    assert index.unique().tolist() == [1]


def test_classifier_inversion_points_at_the_requested_class():
    """With orthonormal weight columns that sum to zero over the inputs, the inversion is exact.

    ``control = (log t - b) W^T - m`` gives logits ``control W + b = log t - m 1^T W = log t``,
    so the classifier reads back exactly the soft one-hot target it was asked for.
    """
    g = torch.Generator().manual_seed(0)
    k, s = 12, 5
    classifier = LinearClassifier((1, 1, k), s, generator=g).double()
    raw = torch.randn(k, s, generator=g, dtype=torch.float64)
    columns, _ = torch.linalg.qr(raw - raw.mean(0))  # orthonormal, each orthogonal to 1
    with torch.no_grad():
        classifier.weight.copy_(columns)
        classifier.bias.copy_(torch.randn(s, generator=g, dtype=torch.float64))
    labels = torch.tensor([0, 3, 4, 1])
    target = LinearClassifier.soft_one_hot(labels, s, dtype=torch.float64)
    with torch.no_grad():
        control = classifier.sample(target)
        read_back = classifier(control)
    # Each sample's control is shifted to start at 0 (non-negative, as a control must be).
    assert control.flatten(1).amin(1).tolist() == [0.0] * 4
    torch.testing.assert_close(read_back, target, rtol=1e-10, atol=1e-12)
    pair = LinearClassifier.soft_one_hot(torch.tensor([1, 0]), 2, dtype=torch.float64)
    expected = torch.tensor([[0.05, 0.95], [0.95, 0.05]], dtype=torch.float64)
    torch.testing.assert_close(pair.reshape(2, 2), expected, rtol=0, atol=1e-15)


def nearest_class_mean(train_images, train_labels, images) -> torch.Tensor:
    """An independent judge: the class whose mean training digit is nearest (Euclidean)."""
    centroids = torch.stack([train_images[train_labels == c].mean(0) for c in range(10)])
    return torch.cdist(images.reshape(len(images), -1), centroids.reshape(10, -1)).argmin(1)


def test_class_conditional_samples_show_the_requested_classes(annealed_flat_model, mnist_small):
    train, _ = mnist_small
    classes = torch.arange(10).repeat_interleave(20)
    images = sample(annealed_flat_model, 200, classes=classes, config=SamplingConfig(top_s=1),
                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    own = (annealed_flat_model.predict_proba(images).argmax(1) == classes).double().mean()
    judged = (nearest_class_mean(train.images, train.labels, images) == classes).double().mean()
    # Measured: 1.00 and 1.00; chance is 0.10, and ignoring the classes gives about that.
    assert own > 0.8
    assert judged > 0.8
    control = class_control(annealed_flat_model, classes, 200).reshape(200, -1)
    read_back = annealed_flat_model.classifier(control.reshape(200, 1, 1, -1)).reshape(200, 10)
    assert (read_back.argmax(1) == classes).double().mean() > 0.8


def quadratic_chain(mean: float, precision: float):
    """A 1x1 folding over 1x2 images and a one-component GMM at both positions.

    Per sample, J(x) = mean over the 2 positions of (const - P (x - mu)^2 / 2), so
    dJ/dx = -P (x - mu) / 2.
    """
    folding = Folding((1, 2, 1), (1, 1), (1, 1)).double()
    gmm = GMM((1, 2, 1), 1, objective="max_component").double()
    with torch.no_grad():
        gmm.means.fill_(mean)
        gmm.sqrt_precisions.fill_(math.sqrt(precision))
    return [folding, gmm]


def test_sharpening_steps_by_hand_on_a_quadratic():
    mu, p = 0.5, 4.0
    chain = quadratic_chain(mu, p)
    x0 = torch.tensor([[0.1, 0.9], [0.3, 0.6]], dtype=torch.float64).reshape(2, 1, 2, 1)

    def grad(x, x_start=x0, w=0.0):  # mean over the 2 positions and the 2 elements
        return -p * (x - mu) / 2 - w * 2 * (x - x_start) / 2

    # rate * P / 2 = 0.5: every step is accepted; two steps of x <- x + r * grad.
    result = sharpen(chain, x0, Sharpening(iterations=2, rate=0.25))
    x1 = x0 + 0.25 * grad(x0)
    x2 = x1 + 0.25 * grad(x1)
    torch.testing.assert_close(result.values, x2, rtol=0, atol=1e-15)
    log_norm = 0.5 * math.log(p) - 0.5 * math.log(2 * math.pi)
    for k, x in enumerate((x0, x1, x2)):
        expected = (log_norm - 0.5 * p * (x - mu) ** 2).flatten(1).mean(1)
        torch.testing.assert_close(result.trace[k], expected, rtol=0, atol=1e-12)
    # rate * P / 2 = 3 overshoots (|1 - 3| > 1): the step is undone and the rate halved, so
    # the second iteration steps with 1.5: x = mu - 0.5 (x0 - mu).
    result = sharpen(chain, x0, Sharpening(iterations=2, rate=1.5))
    torch.testing.assert_close(result.values, mu - 0.5 * (x0 - mu), rtol=0, atol=1e-15)
    torch.testing.assert_close(result.trace[1], result.trace[0])  # the rejected step
    # The pull back to x0: J - w * mean((x - x0)^2), whose gradient is zero at x0.
    w = 2.0
    result = sharpen(chain, x0, Sharpening(iterations=2, rate=0.1, weight=w))
    x1 = x0 + 0.1 * grad(x0, w=w)
    x2 = x1 + 0.1 * grad(x1, w=w)
    torch.testing.assert_close(result.values, x2, rtol=0, atol=1e-15)
    for k, x in enumerate((x0, x1, x2)):  # the trace is J itself, pull back included
        expected = (log_norm - 0.5 * p * (x - mu) ** 2).flatten(1).mean(1)
        expected = expected - w * (x - x0).square().flatten(1).mean(1)
        torch.testing.assert_close(result.trace[k], expected, rtol=0, atol=1e-12)
    one = sharpen(chain, x0[:1], Sharpening(iterations=2, rate=0.1, weight=w))  # per sample
    torch.testing.assert_close(one.values, x2[:1], rtol=0, atol=1e-15)
    for layer in chain:  # parameters keep their own requires_grad
        assert all(param.requires_grad for param in layer.parameters())


def test_sharpening_towards_the_top_climbs_the_top_layer(generator):
    model = DCGMM.from_spec("F(2,1)-G(4)-F(2,1)-G(4)", (3, 3, 1), generator=generator).double()
    layers = list(model.layers)
    for config, target in ((Sharpening(target="top"), 3), (Sharpening(target="next"), 1)):
        chain = sharpening_chain(layers, 0, config)
        assert chain == layers[: target + 1]
    chain = sharpening_chain(layers, 0, Sharpening(iterations=5, target="top", rate=1e-3))
    x0 = torch.rand(4, 3, 3, 1, generator=generator, dtype=torch.float64)
    result = sharpen(chain, x0, Sharpening(iterations=5, target="top", rate=1e-3))

    def top_objective(x):
        h = x
        for layer in chain[:-1]:
            h = layer(h)
        top = chain[-1]
        return top.objective_map(top.log_joint(h)).flatten(1).mean(1)

    with torch.no_grad():
        torch.testing.assert_close(result.trace[0], top_objective(x0))
        torch.testing.assert_close(result.trace[-1], top_objective(result.values))
    assert bool((result.trace[-1] > result.trace[0]).all())
    assert sharpening_chain(layers, 1, Sharpening()) == []  # a GMM layer is not sharpened
    assert sharpening_chain(layers, 0, Sharpening(layers=[3])) == []  # not in the list
    assert sharpening_chain(layers, 0, Sharpening(iterations=0)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": -1}, r"iterations must be >= 0; got -1"),
        ({"rate": 0.0}, r"rate must be positive; got 0.0"),
        ({"weight": -0.5}, r"weight must be >= 0; got -0.5"),
        ({"target": "middle"}, r"target must be 'top' or 'next'; got 'middle'"),
    ],
)
def test_sharpening_settings_are_checked(kwargs, message):
    # The suite's type-check hook refuses a bad Literal first; our own check guards untyped
    # callers, so call the undecorated constructor.
    bare_init = inspect.unwrap(Sharpening.__init__)
    with pytest.raises(ValueError, match=message):
        bare_init(object.__new__(Sharpening), **kwargs)
    for good in ({"target": "top"}, {"target": "next"}, {"iterations": 0}, {"weight": 0.0}):
        Sharpening(**good)


def test_sampling_counts_and_clipping(generator):
    model = flat_model([0.0, 1.0, 2.0, 3.0], generator)
    with torch.no_grad():
        model.layers[1].sqrt_precisions.fill_(1.0)  # wide: noise leaves [0, 1]
    config = SamplingConfig(noise_divisor=1.0)
    assert sample(model, 1, config=config).shape == (1, 2, 2, 1)  # one image is a batch
    with pytest.raises(ValueError, match="n must be a positive number of samples; got 0"):
        sample(model, 0)
    raw = sample(model, 50, config=config, generator=torch.Generator().manual_seed(1), clip=False)
    assert float(raw.min()) < 0.0 < 1.0 < float(raw.max())  # so the clip below matters
    clipped = sample(model, 50, config=config, generator=torch.Generator().manual_seed(1))
    assert torch.equal(clipped, raw.clamp(0.0, 1.0))


def test_class_labels_of_any_integer_type_and_the_upper_bound(annealed_flat_model):
    for classes in (torch.tensor([3, 7], dtype=torch.int32), torch.tensor([3, 7]), [3, 7]):
        control = class_control(annealed_flat_model, classes, 2)
        torch.testing.assert_close(control, class_control(annealed_flat_model, [3, 7], 2))
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 9\] .*; got \[10\]"):
        class_control(annealed_flat_model, [0, 10], 2)

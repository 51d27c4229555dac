"""The fast paths of sampling against the plain ones, in float64.

Sampling draws a component per position and folds the drawn means back through the folding
layer below in one ``embedding_bag`` (``Folding.average_rows``) instead of building every
window, and a shared layer's conditional expectation by one transposed convolution
(``Folding.average_mixtures``); ``draw_best`` pads its rows for vectorised reductions. Each
must give what the plain path gives: the same images for the same generator, the same draws
for the same scores.
"""

import pytest
import torch
from scipy.stats import chisquare

from dcgmm import DCGMM
from dcgmm.generation.sampling import SamplingConfig, sample, sampling_layers
from dcgmm.layers import GMM, Folding
from dcgmm.layers.draws import draw_best


@pytest.mark.parametrize("k", [1, 7, 8, 9, 25])
def test_draw_best_takes_a_unique_maximum_at_any_width(generator, k):
    scores = torch.rand(500, k, generator=generator, dtype=torch.float64) * 2 - 0.5
    assert torch.equal(draw_best(scores, generator=generator), scores.argmax(-1))


def test_draw_best_counts_indices_exactly_in_half_precision(generator):
    # bfloat16 holds integers exactly only up to 256: the winner's index must not round.
    scores = torch.full((300, 300), 0.5).fill_diagonal_(1.0).to(torch.bfloat16)
    assert torch.equal(draw_best(scores, generator=generator), torch.arange(300))


@pytest.mark.parametrize("k", [3, 8, 9])
def test_draw_best_draws_uniformly_among_tied_maxima_and_non_positive_rows(generator, k):
    n = 6_000
    tied = torch.zeros(n, k, dtype=torch.float64)
    tied[:, 0] = tied[:, 2] = 2.0  # two tied maxima, the other entries 0
    chosen = draw_best(tied, generator=generator)
    counts = torch.bincount(chosen, minlength=k)
    assert counts.sum() == counts[0] + counts[2], f"drew outside the maxima: {counts.tolist()}"
    assert chisquare(counts[[0, 2]].numpy()).pvalue > 1e-4
    # Entries below 0 count as 0: a row without a positive entry ties every component.
    negative = -torch.rand(n, k, generator=generator, dtype=torch.float64) - 0.1
    counts = torch.bincount(draw_best(negative, generator=generator), minlength=k)
    assert counts.numel() == k, f"drew a padding column: {counts.tolist()}"
    assert chisquare(counts.numpy()).pvalue > 1e-4


@pytest.mark.parametrize(
    ("shape", "patch", "stride"),
    [
        ((10, 10, 5), (4, 4), (2, 2)),  # overlapping windows, E's F(4,2)
        ((9, 9, 3), (3, 3), (1, 1)),  # every position covered up to 9 times
        ((9, 9, 2), (2, 2), (3, 3)),  # stride beyond the patch: uncovered positions get 0
        ((7, 8, 3), (3, 2), (1, 2)),  # rectangular windows and strides
        ((5, 5, 3), (5, 5), (1, 1)),  # one window: built
        ((9, 9, 1), (3, 3), (1, 1)),  # one channel: the windows are built
    ],
)
def test_average_rows_and_mixtures_are_the_sample_of_the_windows_they_read(
    generator, shape, patch, stride
):
    folding = Folding(shape, patch, stride).double()
    ho, wo, d = folding.output_shape(shape)
    table = torch.randn(11, d, generator=generator, dtype=torch.float64)
    rows = torch.randint(0, 11, (4, ho, wo), generator=generator)
    with torch.no_grad():
        got = folding.average_rows(table, rows)
        expected = folding.sample(table[rows])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = torch.rand(4, ho, wo, 11, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        got = folding.average_mixtures(weights, table)
        expected = folding.sample(weights @ table)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def layer_by_layer(model: DCGMM, n: int, config: SamplingConfig, seed: int) -> torch.Tensor:
    """Top-down sampling without the fused path: every layer's own ``sample``."""
    generator = torch.Generator().manual_seed(seed)
    layers = sampling_layers(model)
    top = layers[-1]
    x = top.logits.new_ones(n, *top.out_shape)
    with torch.no_grad():
        for index in reversed(range(len(layers))):
            layer = layers[index]
            if isinstance(layer, GMM):
                top_s, _ = config.for_layer(index)
                expected = config.mode == "mean"
                x = layer.sample(x, generator=generator, top_s=top_s, expected=expected)
            else:
                x = layer.sample(x, generator=generator)
    return x.clamp(0.0, 1.0)


@pytest.mark.parametrize("mode", ["draw", "mean"])
@pytest.mark.parametrize("top_s", [1, 2, None])
@pytest.mark.parametrize(
    "spec",
    [
        "F(3,1)-G(4)-F(4,2)-G(9)-F(3,1)-G(4)",
        "F(3,1)-G(4,indep)-F(4,2)-G(9,indep)-F(3,1)-G(4)",
        "F(2,1)-G(4)-P(2,2)-F(2,1)-G(9,indep)-F(3,1)-G(4)",
    ],
)
def test_fused_sampling_draws_the_images_of_the_layer_by_layer_walk(spec, top_s, mode):
    g = torch.Generator().manual_seed(5)
    model = DCGMM.from_spec(spec, (10, 10, 1), generator=g).double()
    with torch.no_grad():
        for _, layer in model.gmm_layers():
            layer.logits.normal_(generator=g)
            layer.means.uniform_(0, 1, generator=g)
    config = SamplingConfig(top_s=top_s, mode=mode)
    got = sample(model, 30, config=config, generator=torch.Generator().manual_seed(9))
    expected = layer_by_layer(model, 30, config, seed=9)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)

"""Outlier scores of every kind and layer against a float64 brute force built from the spec.

The model's own path (fused folding + GMM stages, the matmul density) is compared with
loop-based folding, a broadcast density and a loop-built torus kernel (``tests/reference.py``),
with each layer mid-annealing so that the three kinds all differ.
"""

import pytest
import torch

from dcgmm import DCGMM
from dcgmm.evaluation.outliers import SCORE_KINDS, position_scores, sample_scores

from .reference import naive_fold, naive_log_joint, naive_torus_kernel

SPEC = "F(7,7)-G(4)-F(4,1)-G(9)"
SIGMAS = {1: 0.9, 3: 1.3}  # layer index (0-based) -> annealing radius, both above the floor


@pytest.fixture(scope="module")
def model():
    return mid_annealing_model()


def mid_annealing_model() -> DCGMM:
    """SPEC in float64, random parameters, each GMM layer at its SIGMAS radius."""
    g = torch.Generator().manual_seed(0)
    net = DCGMM.from_spec(SPEC, (28, 28, 1), generator=g).double()
    for index, gmm in net.gmm_layers():
        with torch.no_grad():
            gmm.logits.normal_(generator=g)
            gmm.means.uniform_(0, 1, generator=g)
            gmm.sqrt_precisions.uniform_(0.5, 2.0, generator=g)
        gmm.set_sigma_som(SIGMAS[index])
    return net


def brute_force_scores(net: DCGMM, x: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
    """{1-based layer: {kind: (N, H, W)}} from loops and broadcasts, float64."""
    out = {}
    h = x
    for index, layer in enumerate(net.layers):
        if index in SIGMAS:  # a GMM layer on the folded map h
            n, hh, ww, c = h.shape
            log_joint = naive_log_joint(
                h.reshape(-1, c), layer.logits, layer.means, layer.sqrt_precisions
            ).detach()  # (M, K)
            kernel = naive_torus_kernel(layer.n_components, SIGMAS[index])
            annealed = (log_joint[:, None, :] * kernel[None]).sum(-1).amax(-1)
            kinds = {
                "loglik": torch.logsumexp(log_joint, -1),
                "max_component": log_joint.amax(-1),
                "annealed": annealed,
            }
            out[index + 1] = {k: v.reshape(n, hh, ww) for k, v in kinds.items()}
            h = torch.softmax(log_joint, -1).reshape(n, hh, ww, -1)
        else:
            fy, fx = layer.patch_size
            sy, sx = layer.stride
            h = naive_fold(h, fy, fx, sy, sx)
    return out


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_position_scores_of_every_kind_and_layer_match_the_brute_force(model, kind):
    x = torch.rand(5, 28, 28, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = brute_force_scores(model, x)
    got = position_scores(model, x, kind=kind, batch_size=2)  # batches of 2, 2 and 1
    assert set(got) == {2, 4}
    for layer in (2, 4):
        torch.testing.assert_close(got[layer], expected[layer][kind], rtol=1e-9, atol=1e-9)
        per_image = sample_scores(model, x, layer=layer, kind=kind)
        torch.testing.assert_close(
            per_image, expected[layer][kind].flatten(1).mean(1), rtol=1e-9, atol=1e-9
        )
    top = sample_scores(model, x, kind=kind)  # default: the top GMM layer
    torch.testing.assert_close(top, expected[4][kind].flatten(1).mean(1), rtol=1e-9, atol=1e-9)


def test_the_three_kinds_differ_here_so_a_swap_would_show(model):
    x = torch.rand(3, 28, 28, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = brute_force_scores(model, x)
    for layer in (2, 4):
        values = [expected[layer][kind] for kind in SCORE_KINDS]
        for i in range(3):
            for j in range(i + 1, 3):
                assert float((values[i] - values[j]).abs().min()) > 1e-3


def test_position_statistics_are_float64_per_position_moments_of_the_chosen_kind(model):
    from dcgmm.evaluation.outliers import fit_position_statistics

    g = torch.Generator().manual_seed(3)
    base = torch.rand(1, 28, 28, 1, generator=g, dtype=torch.float64) * 0.5
    images = base + 0.01 * torch.rand(7, 28, 28, 1, generator=g, dtype=torch.float64)
    expected = brute_force_scores(model, images)
    for kind in ("max_component", "loglik"):
        stats = fit_position_statistics(model, images, kind=kind, batch_size=3)
        for layer in (2, 4):
            values = expected[layer][kind]
            assert stats[layer].kind == kind
            assert stats[layer].n_samples == 7
            torch.testing.assert_close(stats[layer].mean, values.mean(0), rtol=0, atol=1e-9)
            torch.testing.assert_close(stats[layer].std, values.std(0), rtol=1e-6, atol=1e-12)
    assert float(stats[4].std.max()) < 1.0  # near-identical images: spreads below 1 nat
    two = fit_position_statistics(model, images[:2])  # the fewest that have a spread
    assert two[2].n_samples == 2
    with pytest.raises(ValueError, match="need at least 2 images to estimate a spread; got 1"):
        fit_position_statistics(model, images[:1])


def test_a_position_at_the_threshold_is_an_inlier():
    from dcgmm.evaluation.outliers import PositionStatistics

    stats = PositionStatistics(2, "loglik", torch.zeros(1, 2, dtype=torch.float64),
                               torch.ones(1, 2, dtype=torch.float64), 10)  # fmt: skip
    scores = torch.tensor([[[-2.0, -2.5]], [[-1.5, 0.0]]], dtype=torch.float64)
    # Inlier when L >= mean - c * std (2021 paper): -2.0 sits on the threshold.
    assert stats.outlier_map(scores, c=2.0).tolist() == [[[False, True]], [[False, False]]]
    with pytest.raises(
        ValueError, match=r"scores of layer 2 have positions \(1, 2\); got \(2, 1\)"
    ):
        stats.outlier_map(torch.zeros(3, 2, 1))


def test_to_pixels_averages_the_positions_that_cover_each_pixel():
    from dcgmm.evaluation.outliers import to_pixels

    net = DCGMM.from_spec("F(2,1)-G(4)-P(2,1)-F(2,1)-G(4)", (5, 5, 1))
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # layer 5 works on a 2x2 grid

    # Pixel (y, x) of the 3x3 pooled grid is covered by the 2x2 windows of F(2,1) (layer 4)
    # that contain it; pooling P(2,1) spreads each of its 3x3 cells over a 2x2 block of the
    # 4x4 map below with overlaps averaged, and F(2,1) (layer 1) does so onto 5x5 pixels.
    def spread(grid, window):  # average of the windows covering each position (stride 1)
        h, w = grid.shape
        out = torch.zeros(h + window - 1, w + window - 1, dtype=torch.float64)
        count = torch.zeros_like(out)
        for i in range(h):
            for j in range(w):
                out[i : i + window, j : j + window] += grid[i, j]
                count[i : i + window, j : j + window] += 1
        return out / count

    expected = spread(spread(spread(values[0].double(), 2), 2), 2)  # 2x2 -> 3x3 -> 4x4 -> 5x5
    torch.testing.assert_close(to_pixels(net, 5, values)[0], expected)
    assert float(to_pixels(net, 5, values)[0, 0, 0]) == 1.0  # one window all the way down

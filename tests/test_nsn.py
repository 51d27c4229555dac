"""Normal Similarity Network: scores, growing hard EM, layer shapes, NSN-Gen, occlusion filling."""

import math

import pytest
import torch

from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.nsn_layer import GenSettings, NSNLayer


def blobs(n_per: int = 200, sigma: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three isotropic blobs in 4-d as (N, 1, 1, 4) 'images' (one patch each)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 0, 0, 0], [3.0, 3, 0, 0], [0.0, 0, 3, 3]])
    points = centers.repeat_interleave(n_per, 0) + sigma * torch.randn(3 * n_per, 4, generator=g)
    return points[torch.randperm(3 * n_per, generator=g)].reshape(-1, 1, 1, 4), centers


def test_scores_match_brute_force_distances():
    layer = NSNLayer((6, 6, 2), 3, 1)
    g = torch.Generator().manual_seed(0)
    layer.set_filters(
        torch.randn(5, 18, generator=g), torch.rand(5, generator=g) + 0.2, torch.ones(5)
    )
    x = torch.rand(3, 6, 6, 2, generator=g)
    patches = layer.folding(x)  # (3, 4, 4, 18)
    sq = ((patches[..., None, :] - layer.means) ** 2).sum(-1)
    expected = (
        -sq / (2 * 18 * layer.sigmas**2) - torch.log(layer.sigmas) - 0.5 * math.log(2 * math.pi)
    )
    torch.testing.assert_close(layer.patch_scores(patches), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), torch.sigmoid(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity", ["logpdf_per_dim", "logpdf", "rbf"])
def test_best_filters_is_the_max_of_the_scores(similarity):
    """The E-step's fused scores against the float64 brute-force scores of every filter."""
    layer = NSNLayer((6, 6, 2), 3, 1, similarity=similarity)
    g = torch.Generator().manual_seed(1)
    layer.set_filters(
        torch.rand(7, 18, generator=g), torch.rand(7, generator=g) + 0.2, torch.ones(7)
    )
    patches = layer.folding(torch.rand(4, 6, 6, 2, generator=g)).reshape(-1, 18)
    reference = NSNLayer((6, 6, 2), 3, 1, similarity=similarity).double()
    reference.set_filters(layer.means.double(), layer.sigmas.double(), layer.counts.double())
    expected = reference.patch_scores(patches.double())
    score, best = layer.best_filters(patches, patches.square().sum(-1))
    torch.testing.assert_close(score.double(), expected.amax(-1), rtol=1e-5, atol=1e-5)
    second = expected.topk(2, dim=-1).values
    clear = (second[:, 0] - second[:, 1]) > 1e-4  # no near-tie between the two best
    assert clear.sum() > 0.9 * clear.numel()
    assert torch.equal(best[clear], expected.argmax(-1)[clear])


def test_hard_em_finds_three_blobs_and_tau_controls_growth():
    points, centers = blobs()
    layer = NSNLayer((1, 1, 4), 1, 1)
    # tau = -2 per dimension: a point of a blob falls below it with probability ~1e-5
    # (chi-square with 4 degrees of freedom beyond 27), a point of another blob always.
    record = layer.fit(points, tau=-2.0, generator=torch.Generator().manual_seed(0))
    assert record.converged
    assert layer.n_filters == 3
    order = torch.cdist(centers, layer.means.float()).argmin(1)
    torch.testing.assert_close(layer.means[order].float(), centers, rtol=0, atol=0.03)
    torch.testing.assert_close(layer.sigmas.float(), torch.full((3,), 0.1), rtol=0.15, atol=0)
    assert layer.counts.sum() == points.shape[0]
    greedy = NSNLayer((1, 1, 4), 1, 1)
    greedy.fit(points, tau=5.0, max_filters=12, max_iters=40)
    assert greedy.n_filters == 12  # a very high threshold grows to the cap
    lenient = NSNLayer((1, 1, 4), 1, 1)
    lenient.fit(points, tau=-50.0)
    assert lenient.n_filters == 1  # a very low one keeps the first filter


def test_mnist_architecture_shapes_and_generation():
    model = NSN((28, 28, 1), "28x28")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 28, 28, 1, generator=g) ** 4  # sparse, digit-like intensities
    model.fit(images, taus=[-1.0, -1.0, -1.0], max_filters=[6, 5, 4], max_iters=5, generator=g)
    maps = model.maps(images[:2])
    assert [tuple(m.shape[1:3]) for m in maps] == [(13, 13), (6, 6), (1, 1)]
    assert [m.shape[3] for m in maps] == model.filter_counts()
    assert model.embed(images[:3]).shape == (3, model.filter_counts()[-1])
    a = model.sample(4, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 28, 28, 1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    patch = model.sample(2, from_layer=2, generator=g)  # one receptive field of layer 2
    assert patch.shape == (2, 8, 8, 1)  # (3 - 1) * 2 + 4 pixels


def test_one_hot_top_with_large_beta_and_no_noise_returns_the_filter_mean():
    layer = NSNLayer((4, 4, 1), 4, 1)
    means = torch.arange(32, dtype=torch.float32).reshape(2, 16) / 32
    layer.set_filters(means, torch.tensor([0.3, 0.5]), torch.ones(2))
    phi = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)
    out = layer.generate(phi, GenSettings(beta=1e4, n_draws=1, alpha=0.8, gamma=0.0))
    torch.testing.assert_close(out.reshape(16), 0.8 * means[1], rtol=0, atol=1e-6)


def test_occlusion_filling_keeps_known_pixels():
    model = NSN((28, 28, 1), "28x28")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(30, 28, 28, 1, generator=g) ** 4
    model.fit(images, taus=[-1.0, -1.0, -1.0], max_filters=[6, 5, 4], max_iters=4, generator=g)
    missing = torch.zeros(3, 28, 28, 1, dtype=torch.bool)
    missing[:, :, 14:] = True
    out = model.inpaint(images[:3], missing, generator=g)
    assert torch.isfinite(out).all()
    assert torch.equal(out[~missing], images[:3][~missing])


def test_an_architecture_that_does_not_end_at_one_position_is_refused():
    with pytest.raises(ValueError, match="1x1 top map"):
        NSN((28, 28, 1), [(4, 2), (3, 2)])


def test_state_dict_round_trip_rebuilds_every_layer():
    model = NSN((28, 28, 1), "28x28")
    g = torch.Generator().manual_seed(0)
    model.fit(torch.rand(30, 28, 28, 1, generator=g) ** 4, taus=[-1.0, -1.0, -1.0],
              max_filters=[6, 5, 4], max_iters=4, generator=g)  # fmt: skip
    again = NSN((28, 28, 1), "28x28")
    again.load_filters(model.state_dict())
    assert again.filter_counts() == model.filter_counts()
    a = again.sample(3, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)

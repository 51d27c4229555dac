import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dcgmm.layers import GMM
from dcgmm.layers.gaussian import diag_gaussian_log_density
from dcgmm.layers.torus import torus_smoothing_kernel

from .reference import naive_log_joint, naive_torus_kernel


def random_gmm(shape, k, generator, *, independent=False, dtype=torch.float64):
    layer = GMM(shape, k, independent=independent, generator=generator).to(dtype)
    with torch.no_grad():
        layer.logits.normal_(generator=generator)
        layer.means.uniform_(0, 1, generator=generator)
        layer.sqrt_precisions.uniform_(0.5, 4.0, generator=generator)
    return layer


def test_log_joint_matches_naive_broadcast_float64(generator):
    layer = random_gmm((3, 4, 5), 9, generator)
    x = torch.rand(6, 3, 4, 5, generator=generator, dtype=torch.float64)
    expected = naive_log_joint(
        x.reshape(-1, 5), layer.logits, layer.means, layer.sqrt_precisions
    ).reshape(6, 3, 4, 9)
    torch.testing.assert_close(layer.log_joint(x), expected, rtol=1e-12, atol=1e-10)


def test_log_prob_matches_torch_distributions_float64(generator):
    layer = random_gmm((2, 2, 7), 16, generator)
    x = torch.rand(5, 2, 2, 7, generator=generator, dtype=torch.float64)
    mixture = MixtureSameFamily(
        Categorical(logits=layer.logits),
        Independent(Normal(layer.means, layer.precisions.rsqrt()), 1),
    )
    torch.testing.assert_close(layer.log_prob(x), mixture.log_prob(x), rtol=1e-12, atol=1e-10)


def test_independent_layer_matches_per_position_oracle(generator):
    layer = random_gmm((2, 3, 4), 4, generator, independent=True)
    x = torch.rand(5, 2, 3, 4, generator=generator, dtype=torch.float64)
    got = layer.log_joint(x)
    for i in range(2):
        for j in range(3):
            expected = naive_log_joint(
                x[:, i, j], layer.logits[i, j], layer.means[i, j], layer.sqrt_precisions[i, j]
            )
            torch.testing.assert_close(got[:, i, j], expected, rtol=1e-12, atol=1e-10)


def test_float32_stays_close_to_float64_oracle(generator):
    layer64 = random_gmm((4, 4, 64), 25, generator)
    layer32 = GMM((4, 4, 64), 25)
    layer32.load_state_dict({k: v.float() for k, v in layer64.state_dict().items()})
    x = torch.rand(8, 4, 4, 64, generator=generator, dtype=torch.float64)
    diff = (layer32.log_prob(x.float()).double() - layer64.log_prob(x)).abs()
    # Stated tolerance: 1e-4 relative to the magnitude of the log-density (about 1e2 here).
    assert diff.max() <= 1e-4 * layer64.log_prob(x).abs().max()


def test_gradcheck_log_density():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, generator=g, dtype=torch.float64)
    means = torch.rand(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sqrt_prec = (torch.rand(5, 4, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(diag_gaussian_log_density, (x, means, sqrt_prec))


def test_gradcheck_annealed_loss(generator):
    layer = random_gmm((2, 2, 3), 4, generator)
    layer.set_sigma_som(0.8)
    x = torch.rand(4, 2, 2, 3, generator=generator, dtype=torch.float64)
    names = ("logits", "means", "sqrt_precisions")
    inputs = tuple(getattr(layer, n).detach().clone().requires_grad_() for n in names)
    for name in names:  # swap the Parameters for plain tensors that gradcheck can perturb
        delattr(layer, name)

    def objective(*values):
        for name, value in zip(names, values, strict=True):
            setattr(layer, name, value)
        return layer.forward_and_loss(x)[1]

    assert torch.autograd.gradcheck(objective, inputs)


def test_torus_kernel_matches_naive_and_is_identity_at_floor():
    for k, sigma in ((9, 0.7), (25, 1.77), (49, 2.47)):
        got = torus_smoothing_kernel(k, sigma, dtype=torch.float64, device=torch.device("cpu"))
        torch.testing.assert_close(got, naive_torus_kernel(k, sigma))
    eye = torus_smoothing_kernel(25, 0.01, dtype=torch.float32, device=torch.device("cpu"))
    assert torch.equal(eye, torch.eye(25))


@pytest.mark.parametrize("objective", ["annealed", "max_component", "loglik"])
def test_objectives(objective, generator):
    layer = random_gmm((2, 2, 3), 4, generator)
    layer.objective = objective
    layer.set_sigma_som(1.0)
    x = torch.rand(5, 2, 2, 3, generator=generator, dtype=torch.float64)
    lj = layer.log_joint(x)
    expected = {
        "annealed": (lj @ naive_torus_kernel(4, 1.0).T).amax(-1),
        "max_component": lj.amax(-1),
        "loglik": torch.logsumexp(lj, -1),
    }[objective]
    _, loss = layer.forward_and_loss(x)
    torch.testing.assert_close(loss, -expected.mean())


def test_scores_are_ordered(generator):
    layer = random_gmm((3, 3, 2), 9, generator)
    x = torch.rand(4, 3, 3, 2, generator=generator, dtype=torch.float64)
    scores = layer.scores(x)
    # the max component never exceeds the mixture log-likelihood, which is at most log K above
    assert (scores.max_component <= scores.loglik + 1e-12).all()
    assert (scores.loglik <= scores.max_component + math.log(9) + 1e-12).all()


def test_log_responsibilities_sum_to_one(generator):
    layer = random_gmm((3, 3, 2), 9, generator)
    x = torch.rand(4, 3, 3, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(layer(x).sum(-1), torch.ones(4, 3, 3, dtype=torch.float64))


def test_projection_clips_into_bounds():
    layer = GMM((1, 1, 3), 4)
    with torch.no_grad():
        layer.sqrt_precisions.copy_(torch.tensor([-1.0, 0.0, 3.0, 100.0]).expand(3, 4).T)
    layer.project_()
    expected = torch.tensor([math.sqrt(1e-4), math.sqrt(1e-4), 3.0, math.sqrt(20)])  # spec §3
    torch.testing.assert_close(layer.sqrt_precisions.detach(), expected.expand(3, 4).T)


def test_non_square_k_with_annealed_loss_is_a_clear_error():
    with pytest.raises(ValueError, match=r"perfect square.*K=16 or K=25"):
        GMM((1, 1, 3), 20)
    GMM((1, 1, 3), 20, objective="max_component")  # fine without the torus


def test_initialisation_follows_spec(generator):
    layer = GMM((2, 2, 5), 9, generator=generator)
    assert torch.equal(layer.logits, torch.zeros(9))
    assert layer.means.abs().max() <= 0.1
    assert torch.allclose(layer.precisions, torch.full((9, 5), 20.0))
    assert float(layer.sigma_som) == pytest.approx(0.25 * math.sqrt(18))


@pytest.mark.parametrize("independent", [False, True])
def test_missing_entries_are_marginalised_float64(generator, independent):
    layer = random_gmm((2, 2, 5), 4, generator, independent=independent)
    x = torch.rand(3, 2, 2, 5, generator=generator, dtype=torch.float64)
    missing = torch.rand(3, 2, 2, 5, generator=generator) < 0.4
    missing[0, 0, 0] = True  # a position with nothing observed: the prior remains
    got = layer.log_joint(x.masked_fill(missing, float("nan")), missing)
    for n in range(3):
        for i in range(2):
            for j in range(2):
                keep = ~missing[n, i, j]
                means = layer.means[i, j] if independent else layer.means
                sqrt_prec = layer.sqrt_precisions[i, j] if independent else layer.sqrt_precisions
                logits = layer.logits[i, j] if independent else layer.logits
                # The marginal of a diagonal Gaussian: keep only the observed coordinates.
                expected = naive_log_joint(
                    x[n, i, j][keep][None], logits, means[:, keep], sqrt_prec[:, keep]
                )[0]
                torch.testing.assert_close(got[n, i, j], expected, rtol=1e-12, atol=1e-10)
    prior = torch.log_softmax(layer.logits, -1)
    torch.testing.assert_close(got[0, 0, 0], prior[0, 0] if independent else prior)
    torch.testing.assert_close(
        layer.log_joint(x, torch.zeros_like(missing)), layer.log_joint(x), rtol=1e-12, atol=1e-10
    )


def test_expected_sample_is_the_weighted_mean_of_means(generator):
    layer = random_gmm((1, 2, 3), 4, generator)
    control = torch.rand(5, 1, 2, 4, generator=generator, dtype=torch.float64)
    out = layer.sample(control, expected=True)
    weights = control / control.sum(-1, keepdim=True)
    torch.testing.assert_close(out, weights @ layer.means.detach())
    top1 = layer.sample(control, expected=True, top_s=1)
    assert torch.equal(top1, layer.means.detach()[control.argmax(-1)])

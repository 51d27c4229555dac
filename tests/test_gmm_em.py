"""Stepwise EM for GMM layers (dcgmm.layers.gmm_em): float64 oracles and the trainer's use."""

import copy

import numpy as np
import pytest
import torch

from dcgmm import DCGMM
from dcgmm.evaluation.scores import evaluate
from dcgmm.layers import GMM
from dcgmm.layers.gmm_em import em_step_size, stepwise_em_step_
from dcgmm.layers.gmm_gradients import Statistics
from dcgmm.stages import build_stages
from dcgmm.training.annealing import AnnealingConfig, SingleExpSchedule
from dcgmm.training.config import TrainConfig, preset_config
from dcgmm.training.trainer import Trainer

from .test_gmm import random_gmm


def posterior_statistics(layer: GMM, x: torch.Tensor) -> Statistics:
    """Naive sums of the exact posteriors per mixture (one per position if independent)."""
    post = torch.softmax(layer.log_joint(x), -1)  # (N, H, W, K)
    if layer.independent:
        return Statistics(
            post.sum(0),
            torch.einsum("nhwk,nhwc->hwkc", post, x),
            torch.einsum("nhwk,nhwc->hwkc", post, x * x),
        )
    rows, xs = post.reshape(-1, post.shape[-1]), x.reshape(-1, x.shape[-1])
    return Statistics(rows.sum(0), rows.T @ xs, rows.T @ (xs * xs))


@pytest.mark.parametrize("independent", [False, True])
def test_full_step_is_the_batch_m_step(generator, independent):
    layer = random_gmm((2, 3, 4), 9, generator, independent=independent)
    x = torch.rand(50, 2, 3, 4, generator=generator, dtype=torch.float64)
    stats = posterior_statistics(layer, x)
    stepwise_em_step_(layer, stats, 1.0)
    r = stats.weight.unsqueeze(-1)
    mean = stats.first / r
    variance = (stats.second / r - mean * mean).clamp_min(1 / 20)
    torch.testing.assert_close(layer.means, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.precisions, 1 / variance, rtol=1e-10, atol=1e-10)
    weights = stats.weight / stats.weight.sum(-1, keepdim=True)
    torch.testing.assert_close(layer.weights, weights, rtol=1e-12, atol=1e-12)


def test_a_step_is_the_running_average_of_the_batch_statistics_float64():
    """Numpy oracle: responsibilities by broadcasting, s <- (1 - eta) s + eta s_batch, M-step."""
    rng = np.random.default_rng(0)
    k, d, n, floor = 3, 4, 6, 0.6
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d))
    variances = np.maximum(rng.uniform(0.5, 2.0, size=(k, d)), floor)
    x = rng.normal(size=(n, d))
    layer = GMM((1, 1, d), k, objective="loglik").to(torch.float64)
    with torch.no_grad():
        layer.logits.copy_(torch.tensor(np.log(weights)))
        layer.means.copy_(torch.tensor(means))
        layer.sqrt_precisions.copy_(torch.tensor(variances**-0.5))
    _, loglik, stats = layer.forward_and_statistics(torch.tensor(x).reshape(n, 1, 1, d))
    eta = em_step_size(0, 0.7)
    stepwise_em_step_(layer, stats, eta, variance_floor=floor)
    log_joint = np.log(weights)[None] - 0.5 * (
        (x[:, None] - means[None]) ** 2 / variances[None] + np.log(2 * np.pi * variances)[None]
    ).sum(-1)
    top = log_joint.max(1, keepdims=True)
    expected_loglik = (top[:, 0] + np.log(np.exp(log_joint - top).sum(1))).mean()
    assert float(loglik) == pytest.approx(expected_loglik, rel=1e-12)
    resp = np.exp(log_joint - top)
    resp /= resp.sum(1, keepdims=True)
    assert eta == pytest.approx(2.0**-0.7)
    s0 = (1 - eta) * weights + eta * resp.mean(0)
    s1 = (1 - eta) * weights[:, None] * means + eta * resp.T @ x / n
    s2 = (1 - eta) * weights[:, None] * (variances + means**2) + eta * resp.T @ x**2 / n
    np.testing.assert_allclose(layer.weights.detach().numpy(), s0 / s0.sum(), rtol=1e-12)
    np.testing.assert_allclose(layer.means.detach().numpy(), s1 / s0[:, None], rtol=1e-12)
    expected_var = np.maximum(s2 / s0[:, None] - (s1 / s0[:, None]) ** 2, floor)
    np.testing.assert_allclose(1 / layer.precisions.detach().numpy(), expected_var, rtol=1e-10)


def test_fixed_weights_stay(generator):
    layer = random_gmm((1, 1, 3), 4, generator)
    before = layer.logits.detach().clone()
    x = torch.rand(30, 1, 1, 3, generator=generator, dtype=torch.float64)
    stepwise_em_step_(layer, posterior_statistics(layer, x), 0.5, learn_weights=False)
    torch.testing.assert_close(layer.logits.detach(), before, rtol=0, atol=0)


def test_step_size_is_checked():
    assert em_step_size(0, 0.6) == pytest.approx(2**-0.6)
    with pytest.raises(ValueError, match="exponent"):
        em_step_size(0, 0.5)
    layer = GMM((1, 1, 2), 4)
    zeros = Statistics(torch.ones(4), torch.zeros(4, 2), torch.ones(4, 2))
    with pytest.raises(ValueError, match="step size"):
        stepwise_em_step_(layer, zeros, 0.0)


@pytest.mark.parametrize("spec", ["F(3,1)-G(4)-F(2,2)-G(4,indep)", "F(3,1)-G(4,indep)-F(2,1)-G(4)"])
def test_fused_stages_give_the_layer_statistics(generator, spec):
    """Every stage kind's statistics equal the plain layer's (float64, all objectives)."""
    model = DCGMM.from_spec(spec, (7, 7, 1), generator=generator).to(torch.float64)
    x = torch.rand(5, 7, 7, 1, generator=generator, dtype=torch.float64)
    h = x
    for stage in build_stages(list(model.layers)):
        if stage.gmm is None:
            h = stage.forward(h)
            continue
        folding = getattr(stage, "folding", None)
        folded = folding(h) if folding is not None else h
        _, _, expected = stage.gmm.forward_and_statistics(folded)
        out, _, got = stage.objective_and_statistics(h)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        h = out


def test_every_window_rule_shrinks_each_window_and_judges_stationarity():
    cfg = AnnealingConfig(rule="every_window", gamma=0.5, sigma_floor=0.1)
    schedule = SingleExpSchedule.start(cfg, sigma_start=1.0)
    assert not schedule.end_window(10.0)
    assert not schedule.end_window(11.0)
    assert schedule.sigma == 1.0
    # A window that moved a lot still shrinks the radius, and is not stationary.
    assert not schedule.end_window(20.0)
    assert schedule.sigma == 0.5
    assert schedule.end_window(20.001)  # moved by < 1e-3 of 20
    assert schedule.sigma == 0.25
    with pytest.raises(ValueError, match="rule"):
        AnnealingConfig(rule="sometimes")  # type: ignore[arg-type]


def test_solver_options_are_refused_where_they_do_nothing():
    with pytest.raises(ValueError, match="lr_start"):
        TrainConfig(steps=10, solver="em", lr_start=0.5)
    with pytest.raises(ValueError, match="lr_factor_weights"):
        TrainConfig(steps=10, solver="em", lr_factor_weights=0.7)
    with pytest.raises(ValueError, match="em_step_exponent"):
        TrainConfig(steps=10, em_step_exponent=0.8)
    with pytest.raises(ValueError, match=r"\(0.5, 1\]"):
        TrainConfig(steps=10, solver="em", em_step_exponent=0.4)
    assert TrainConfig(steps=10, solver="em", lr_factor_weights=0).learns_weights is False
    # A preset's SGD factors do not apply under EM; its fixed weights (F, G) do.
    em = TrainConfig(steps=10, solver="em")
    assert preset_config("A", em, set()) == em
    assert preset_config("F", em, set()).lr_factor_weights == 0.0


def test_trainer_em_raises_the_objective_and_skips_the_optimizer(mnist_small):
    train, _ = mnist_small
    model = DCGMM.from_spec("F(3,1)-G(9,indep)-F(4,2)-G(9)", train.image_shape,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    config = TrainConfig(steps=60, solver="em", annealing_window=10, log_every=10)
    trainer = Trainer(model, config, train.images[:500])
    before = [p.detach().clone() for p in model.parameters()]
    start = evaluate(model, train.images[:500]).layers
    trainer.run()
    for (name, after), old in zip(model.named_parameters(), before, strict=True):
        # The top layer's inputs (responsibilities) vary less than the variance floor, so
        # its precisions stay at the bound they start from.
        if name != "layers.3.sqrt_precisions":
            assert not torch.equal(after, old), name
    assert all(p.grad is None for p in model.parameters())  # SGD never touched them
    # Every window after the second shrank each active layer's radius once.
    for index, gmm in model.gmm_layers():
        windows = (60 - trainer._start_step[index]) // 10
        expected = gmm_start_sigma(gmm) * 0.9 ** max(windows - 2, 0)
        assert gmm.sigma_som_value == pytest.approx(max(expected, 0.01))
    end = evaluate(model, train.images[:500]).layers
    assert end[0].max_component > start[0].max_component + 1.0
    # The top layer's input moved while it trained; compare it with itself untrained on
    # the trained lower layer's output.
    untrained = copy.deepcopy(model)
    untrained.layers[3].reset_parameters(generator=torch.Generator().manual_seed(0))
    fresh = evaluate(untrained, train.images[:500]).layers
    assert end[1].max_component > fresh[1].max_component + 1.0


def gmm_start_sigma(gmm: GMM) -> float:
    from dcgmm._numerics import sigma_som_start

    return sigma_som_start(gmm.n_components)

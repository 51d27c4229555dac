"""A hard objective's statistics as sums of the windows each component wins."""

import copy

import pytest
import torch

from dcgmm import _compiling
from dcgmm._numerics import SIGMA_SOM_FLOOR
from dcgmm.layers import Folding
from dcgmm.layers import gmm_gradients as grads
from dcgmm.stages import FoldedGMMStage, window_sums

from .test_gmm import random_gmm
from .test_gmm_gradients import PARAMS, autograd_grads


@pytest.fixture
def sums_everywhere(monkeypatch):
    """Take the window sums wherever R's rows are table rows (float64 too, eagerly)."""
    monkeypatch.setattr(window_sums, "pays", lambda *args: True)
    monkeypatch.setattr(_compiling, "_compiled", {})
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)


@pytest.mark.parametrize(
    ("input_shape", "patch", "stride"),
    [((9, 9, 1), (3, 3), (1, 1)), ((8, 10, 3), (4, 2), (2, 3)), ((10, 10, 4), (4, 4), (2, 2))],
)
@pytest.mark.parametrize(
    ("objective", "sigma"),
    [("annealed", 0.9), ("annealed", SIGMA_SOM_FLOOR), ("max_component", 0.9)],
)
def test_window_sums_give_the_autograd_gradients(
    generator, sums_everywhere, input_shape, patch, stride, objective, sigma
):
    """float64: the folded stage's gradients from the window sums against autograd."""
    folding = Folding(input_shape, patch, stride)
    gmm = random_gmm(folding.out_shape, 9, generator)
    gmm.objective = objective
    gmm.set_sigma_som(sigma)
    h = torch.rand(6, *input_shape, generator=generator, dtype=torch.float64)
    expected = autograd_grads(gmm, folding(h))
    FoldedGMMStage(folding, gmm, 1).train_step(h)
    for name in PARAMS:
        torch.testing.assert_close(getattr(gmm, name).grad, expected[name], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    ("input_shape", "patch", "stride"), [((9, 9, 1), (3, 3), (1, 1)), ((8, 10, 3), (4, 2), (2, 3))]
)
def test_the_fallback_one_hot_product_gives_the_same_sums(generator, input_shape, patch, stride):
    """float64: what runs where compiling failed, against the sums taken eagerly."""
    features = torch.rand(4, *input_shape, generator=generator, dtype=torch.float64)
    ho, wo = ((size - p) // s + 1 for size, p, s in zip(input_shape, patch, stride, strict=False))
    best = torch.randint(0, 5, (4, ho, wo), generator=generator)
    expected = window_sums.window_sums(features, best, patch, stride, 5)
    got = window_sums._window_sums_by_product(features, best, patch, stride, 5)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("objective", ["annealed", "max_component"])
def test_compiled_window_sums_match_the_weight_gradient_float32(generator, monkeypatch, objective):
    """float32 on the CPU: the compiled sums against oneDNN's weight gradient, same stage."""
    folding = Folding((12, 12, 20), (4, 4), (2, 2))  # E's second layer, smaller
    gmm = random_gmm(folding.out_shape, 9, generator, dtype=torch.float32)
    gmm.objective = objective
    gmm.set_sigma_som(0.9)
    stage = FoldedGMMStage(folding, gmm, 1)
    h = torch.rand(6, 12, 12, 20, generator=generator)
    monkeypatch.setattr(window_sums, "pays", lambda *args: False)
    _, value, expected = stage.objective_and_statistics(h)
    monkeypatch.setattr(_compiling, "_compiled", {})
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)
    monkeypatch.setattr(window_sums, "pays", lambda *args: True)
    _, value_sums, got = stage.objective_and_statistics(h)
    assert window_sums.window_sums in _compiling._compiled, "the compiled sums did not run"
    assert value_sums == value
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_the_log_likelihood_takes_the_weight_gradient(generator, sums_everywhere):
    """R is dense for "loglik": no table rows to sum by, the convolution's gradient runs."""
    folding = Folding((8, 8, 3), (3, 3), (1, 1))
    gmm = random_gmm(folding.out_shape, 4, generator)
    gmm.objective = "loglik"
    h = torch.rand(5, 8, 8, 3, generator=generator, dtype=torch.float64)
    expected = autograd_grads(copy.deepcopy(gmm), folding(h))
    FoldedGMMStage(folding, gmm, 1).train_step(h)
    for name in PARAMS:
        torch.testing.assert_close(getattr(gmm, name).grad, expected[name], rtol=1e-9, atol=1e-10)
    assert window_sums.window_sums not in _compiling._compiled


def test_the_sums_run_compiled_in_float32_on_the_cpu_for_big_enough_layers(monkeypatch):
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)
    e_second = torch.empty(100, 26, 26, 50)  # preset E's second GMM layer: [h^2, h] of K = 25
    best = torch.zeros(100, 12, 12, dtype=torch.int64)
    shape = (25, (4, 4), (2, 2))
    assert window_sums.pays(e_second, best, *shape)
    assert not window_sums.pays(e_second.double(), best, *shape)
    assert not window_sums.pays(e_second, best[:1, :2, :2], *shape)  # too few additions
    monkeypatch.setenv("DCGMM_COMPILE", "0")
    assert not window_sums.pays(e_second, best, *shape)


def test_past_max_shapes_a_function_runs_op_by_op(monkeypatch):
    """Dynamo stops compiling after 8 shapes and runs the function eagerly (a slow scatter)."""
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.setattr(_compiling, "_compiled", {})
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)
    ran = []

    def fused(x):
        return x + 1

    def op_by_op(x):
        ran.append(x.shape[0])
        return x + 1

    for n in range(1, _compiling.MAX_SHAPES + 3):
        torch.testing.assert_close(_compiling.call(fused, op_by_op, torch.zeros(n), applies=True),
                                   torch.ones(n))  # fmt: skip
    assert ran == [_compiling.MAX_SHAPES + 1, _compiling.MAX_SHAPES + 2]
    _compiling.call(fused, op_by_op, torch.zeros(1), applies=True)  # a shape it has compiled
    assert len(ran) == 2


def test_the_log_likelihood_has_no_table_lookup():
    with pytest.raises(ValueError, match="dense"):
        grads.hard_objective_gradient(torch.zeros(2, 4), "loglik", None)

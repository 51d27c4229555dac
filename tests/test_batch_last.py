"""The compiled max and softmax over the components of batch-last log-joints."""

import copy

import pytest
import torch

from dcgmm import _compiling
from dcgmm.layers import Folding, batch_last
from dcgmm.stages import IndependentGMMStage

from .test_gmm import random_gmm


@pytest.fixture
def compiled_everywhere(monkeypatch, fresh_compiling):
    """Compile the batch-last reductions at any size, from a clean compile state."""
    monkeypatch.setattr(batch_last, "COMPILE_MIN_VALUES", 1)


def _ran_compiled(fused) -> bool:
    return fused in _compiling._shapes


def test_compiled_max_and_softmax_equal_torchs(generator, compiled_everywhere):
    """float32: the unrolled loops against ``Tensor.max`` and ``torch.softmax`` over axis -2."""
    values = 30 * torch.randn(7, 25, 40, generator=generator)
    values[2, 24, 5] = 1e3  # winners at both ends of the loop
    values[3, 0, 6] = 1e3
    best_values, best = batch_last.max_over_components(values)
    resp = batch_last.softmax_over_components(values)
    assert _ran_compiled(batch_last._max_unrolled), "the compiled max did not run"
    assert _ran_compiled(batch_last._softmax_unrolled), "the compiled softmax did not run"
    expected_values, expected = values.max(dim=-2)
    assert torch.equal(best, expected)
    assert torch.equal(best_values, expected_values)
    assert best[2, 5] == 24
    assert best[3, 6] == 0
    torch.testing.assert_close(resp, torch.softmax(values, dim=-2), rtol=1e-6, atol=1e-7)


def test_the_first_of_equal_values_wins(compiled_everywhere):
    values = torch.zeros(2, 5, 3)
    values[:, 1] = 1.0
    values[:, 3] = 1.0  # a tie with component 1
    _, best = batch_last.max_over_components(values)
    assert _ran_compiled(batch_last._max_unrolled)
    assert torch.equal(best, torch.ones(2, 3, dtype=torch.int64))


def test_a_nan_propagates_to_the_max(generator, compiled_everywhere):
    values = torch.randn(3, 6, 8, generator=generator)
    values[1, 4, 2] = float("nan")
    best_values, best = batch_last.max_over_components(values)
    assert torch.isnan(best_values[1, 2])
    assert torch.isfinite(best_values[0]).all()
    assert 0 <= int(best[1, 2]) < 6


def test_small_or_float64_values_run_torchs_own(generator, monkeypatch):
    monkeypatch.setattr(_compiling, "_shapes", {})
    small = torch.randn(2, 25, 10, generator=generator)  # below COMPILE_MIN_VALUES
    batch_last.max_over_components(small)
    batch_last.softmax_over_components(small.double())
    assert not _compiling._shapes


@pytest.mark.parametrize("objective", ["annealed", "max_component"])
def test_independent_stage_trains_alike_with_the_compiled_reductions(
    generator, compiled_everywhere, monkeypatch, objective
):
    """float32 stage: the compiled heads give the gradients and output of torch's own."""
    folding = Folding((10, 10, 6), (4, 4), (2, 2))
    gmm = random_gmm(folding.out_shape, 9, generator, independent=True).float()
    gmm.objective = objective
    gmm.set_sigma_som(0.9)
    twin = copy.deepcopy(gmm)
    h = torch.rand(20, 10, 10, 6, generator=generator)
    resp, value = IndependentGMMStage(folding, gmm, 1).train_step(h)
    assert _ran_compiled(batch_last._max_unrolled), "the compiled max did not run"
    monkeypatch.setenv("DCGMM_COMPILE", "0")
    twin_resp, twin_value = IndependentGMMStage(folding, twin, 1).train_step(h)
    torch.testing.assert_close(resp, twin_resp, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(value, twin_value, rtol=1e-6, atol=0.0)
    for name in ("means", "sqrt_precisions", "logits"):
        got, expected = getattr(gmm, name).grad, getattr(twin, name).grad
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)

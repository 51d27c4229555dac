"""The fused passes over an independent layer's per-position parameters."""

import contextlib
import math
import warnings

import pytest
import torch

from dcgmm import _compiling
from dcgmm._numerics import LOG_2PI
from dcgmm.layers import gmm_gradients as grads
from dcgmm.stages import position_parameters as pp


def parameters(shape, generator, dtype=torch.float64):
    means = torch.rand(shape, generator=generator, dtype=dtype)
    sqrt_prec = 0.01 + 4.4 * torch.rand(shape, generator=generator, dtype=dtype)
    logits = torch.randn(shape[:-1], generator=generator, dtype=dtype)
    stats = grads.Statistics(
        torch.rand(shape[:-1], generator=generator, dtype=dtype),
        torch.randn(shape, generator=generator, dtype=dtype),
        torch.rand(shape, generator=generator, dtype=dtype),
    )
    return means, sqrt_prec, logits, stats


@pytest.mark.parametrize("dim", [1, 6, 9, 400, 64])
def test_sum_of_logs_is_the_sum_of_the_logs(generator, dim):
    """Float64 oracle, at the ends of the square-root precisions' range too."""
    values = 0.01 + 4.47 * torch.rand(3, 5, dim, generator=generator, dtype=torch.float64)
    values[0, 0] = 0.01  # the lower bound everywhere: a product of 8 is 1e-16
    values[0, 1] = math.sqrt(20.0)  # the upper bound
    torch.testing.assert_close(pp.sum_of_logs(values), values.log().sum(-1), rtol=1e-12, atol=0)
    got32 = pp.sum_of_logs(values.float()).double()
    torch.testing.assert_close(got32, values.log().sum(-1), rtol=1e-5, atol=1e-5)


def test_filters_are_the_log_density_coefficients(generator):
    """W [x^2, x] + bias is log pi_k + log N(x; mu_k, 1/s_k^2) per position (float64 oracle)."""
    means, sqrt_prec, logits, _ = parameters((2, 3, 4, 7), generator)
    weight, bias = pp.filters(means, sqrt_prec, logits)
    x = torch.randn(2, 3, 1, 7, generator=generator, dtype=torch.float64)
    got = (weight * torch.cat([x * x, x], -1)).sum(-1) + bias
    var = 1.0 / sqrt_prec**2
    expected = torch.log_softmax(logits, -1) - 0.5 * (
        (x - means) ** 2 / var + var.log() + LOG_2PI
    ).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)


def test_observed_filters_are_the_marginal_log_density_coefficients(generator):
    """W [o x^2, o x, o] + bias is log pi_k + the observed entries' log N (float64 oracle)."""
    means, sqrt_prec, logits, _ = parameters((2, 3, 4, 7), generator)
    weight, bias = pp.observed_filters(means, sqrt_prec, logits)
    x = torch.randn(2, 3, 1, 7, generator=generator, dtype=torch.float64)
    seen = (torch.rand(2, 3, 1, 7, generator=generator) < 0.6).double()
    got = (weight * torch.cat([seen * x * x, seen * x, seen], -1)).sum(-1) + bias
    var = 1.0 / sqrt_prec**2
    per_entry = -0.5 * ((x - means) ** 2 / var + var.log() + LOG_2PI)
    expected = torch.log_softmax(logits, -1) + (seen * per_entry).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)


@contextlib.contextmanager
def no_runtime_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def compiled_everywhere(monkeypatch):
    monkeypatch.setattr(pp, "COMPILE_MIN_VALUES", 1)
    monkeypatch.setattr(_compiling, "_compiled", {})
    monkeypatch.setattr(_compiling, "_failed", False)
    monkeypatch.setattr(_compiling, "_shapes", {})
    monkeypatch.delenv("DCGMM_COMPILE", raising=False)


def test_compiled_passes_match_the_op_by_op_ones(generator, monkeypatch):
    """float32 on the CPU: the torch.compile form against the op-by-op form of each function."""
    compiled_everywhere(monkeypatch)
    args = tuple(
        t.float() if isinstance(t, torch.Tensor) else grads.Statistics(*(s.float() for s in t))
        for t in parameters((2, 3, 9, 16), generator)
    )
    means, sqrt_prec, logits, stats = args
    with no_runtime_warning():
        weight, bias = pp.filters(means, sqrt_prec, logits)
        descent = pp.descent_gradients(means, sqrt_prec, logits, stats)
    assert _compiling._compiled, "the compiled form did not run"
    ref_weight, ref_bias = pp._filters_op_by_op(means, sqrt_prec, logits)
    torch.testing.assert_close(weight, ref_weight, rtol=1e-6, atol=0)
    torch.testing.assert_close(bias, ref_bias, rtol=1e-5, atol=1e-5)
    for got, ref in zip(descent, grads.descent_gradients(*args), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with no_runtime_warning():
        observed_weight, observed_bias = pp.observed_filters(means, sqrt_prec, logits)
    ref_weight, ref_bias = pp._observed_filters_fused(means, sqrt_prec, logits)  # eagerly
    torch.testing.assert_close(observed_weight, ref_weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(observed_bias, ref_bias, rtol=1e-6, atol=1e-6)


def test_a_failed_compilation_falls_back_with_one_warning(generator, monkeypatch):
    compiled_everywhere(monkeypatch)

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    means, sqrt_prec, logits, _ = parameters((2, 3, 4, 8), generator, torch.float32)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        weight, bias = pp.filters(means, sqrt_prec, logits)
    ref_weight, ref_bias = pp._filters_op_by_op(means, sqrt_prec, logits)
    torch.testing.assert_close(weight, ref_weight)
    torch.testing.assert_close(bias, ref_bias)
    with no_runtime_warning():  # once: from then on op by op, silently
        pp.filters(means, sqrt_prec, logits)


def test_dcgmm_compile_0_runs_op_by_op(generator, monkeypatch):
    compiled_everywhere(monkeypatch)
    monkeypatch.setenv("DCGMM_COMPILE", "0")
    means, sqrt_prec, logits, _ = parameters((2, 3, 4, 8), generator, torch.float32)
    pp.filters(means, sqrt_prec, logits)
    assert not _compiling._compiled

"""A GMM layer's responsibilities and scores in one pass, compiled, against PyTorch's ops."""

import pytest
import torch

from dcgmm import _compiling
from dcgmm.layers import gmm_head


@pytest.fixture
def compiled_everywhere(monkeypatch, fresh_compiling):
    monkeypatch.setattr(gmm_head, "COMPILE_MIN_VALUES", 1)


def _reference(log_joint, kernel):
    smoothed = log_joint if kernel is None else log_joint @ kernel.T
    return (
        torch.softmax(log_joint, -1),
        smoothed.amax(-1),
        log_joint.amax(-1),
        torch.logsumexp(log_joint, -1),
    )


@pytest.mark.parametrize("smoothing", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_head_equals_pytorchs_ops(generator, compiled_everywhere, smoothing, dtype):
    """float32 compiled, float64 op by op: softmax, annealed max, max and log-sum-exp."""
    log_joint = (40 * torch.randn(4, 5, 6, 25, generator=generator) - 300).to(dtype)
    kernel = torch.rand(25, 25, generator=generator, dtype=dtype) if smoothing else None
    got = gmm_head.responsibilities_and_scores(log_joint, kernel)
    fused = gmm_head._head_smoothed if smoothing else gmm_head._head_at_floor
    assert (fused in _compiling._shapes) == (dtype == torch.float32)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    for a, b in zip(got, _reference(log_joint, kernel), strict=True):
        torch.testing.assert_close(a, b, **tolerance)


def test_infinite_and_nan_rows_score_as_pytorch_does(compiled_everywhere):
    log_joint = torch.randn(3, 4, 25)
    log_joint[0, 1] = -torch.inf  # no component explains the position
    log_joint[1, 2, 3] = torch.nan
    resp, _, top, loglik = gmm_head.responsibilities_and_scores(log_joint, None)
    assert loglik[0, 1] == -torch.inf
    assert torch.isnan(resp[0, 1]).all()
    assert torch.isnan(loglik[1, 2])
    assert torch.isnan(top[1, 2])
    finite = torch.ones(3, 4, dtype=torch.bool)
    finite[0, 1] = finite[1, 2] = False
    expected = torch.logsumexp(log_joint, -1)
    torch.testing.assert_close(loglik[finite], expected[finite])

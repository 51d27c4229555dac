"""A GMM layer's responsibilities and density scores from its log-joints, in one pass.

Scoring a batch (:meth:`dcgmm.layers.GMM.scores`, the stages' ``scores``) turns the (..., K)
log-joints into the responsibilities (a softmax), the max-component and exact
log-likelihoods (a max and a log-sum-exp) and the annealed score (a max of the smoothed
log-joints). Run one by one, PyTorch reads every row of K values four times and takes the max
and the sum of exponentials twice; over an innermost axis of K = 25 its CPU reductions are not
vectorised, so preset E's first layer (1.69M log-joints, batch 100) spent 12.7 of the 14.6 ms
its ``scores`` took there (2 threads). Here the max and the sum of exponentials are taken once
and shared, and on the CPU in float32, for at least :data:`COMPILE_MIN_VALUES` log-joints, the
whole head runs through ``torch.compile`` as one loop over the rows: softmax, max and
log-sum-exp of (100, 26, 26, 25) log-joints took 14.2 -> 2.0 ms at 2 threads and 25.2 -> 4.1
ms at 1 (scratch microbenchmark, 2026-12-07); ``model.scores`` of 100 digits, fresh
processes, before -> after: preset E 25.4 -> 15.4 ms at 2 threads and 42.5 -> 26.3 ms at 1,
E-indep 27.1 -> 20.0 and 48.8 -> 36.5, D 19.0 -> 12.6 and 35.9 -> 22.8. Elsewhere the same
formulas run op by op.
"""

import torch
from torch import Tensor

from dcgmm import _compiling

__all__ = ["COMPILE_MIN_VALUES", "responsibilities_and_scores"]

COMPILE_MIN_VALUES = 2**16


def _head(log_joint: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return (softmax, max, log-sum-exp) over the last axis, the max and sum taken once.

    As ``torch.logsumexp`` does, an infinite max is not subtracted: a row of -inf has
    log-sum-exp -inf (and NaN responsibilities, as ``torch.softmax`` gives).
    """
    top = log_joint.amax(dim=-1, keepdim=True)
    shift = torch.where(top.isinf(), torch.zeros_like(top), top)
    exps = torch.exp(log_joint - shift)
    total = exps.sum(dim=-1, keepdim=True)
    return exps / total, top.squeeze(-1), (shift + total.log()).squeeze(-1)


def _head_at_floor(log_joint: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    resp, top, loglik = _head(log_joint)
    return resp, top, top, loglik


def _head_smoothed(log_joint: Tensor, kernel: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    resp, top, loglik = _head(log_joint)
    return resp, (log_joint @ kernel.T).amax(dim=-1), top, loglik


def responsibilities_and_scores(
    log_joint: Tensor, kernel: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (responsibilities, annealed, max-component, log-likelihood) of (..., K) log-joints.

    ``kernel`` is the (K, K) annealing kernel, ``None`` at the radius floor (the annealed
    score is then the max-component one). The scores have the leading shape of ``log_joint``.
    """
    applies = (
        log_joint.device.type == "cpu"
        and log_joint.dtype == torch.float32
        and log_joint.numel() >= COMPILE_MIN_VALUES
    )
    if kernel is None:
        out = _compiling.call(_head_at_floor, _head_at_floor, log_joint, applies=applies)
    else:
        out = _compiling.call(_head_smoothed, _head_smoothed, log_joint, kernel, applies=applies)
    resp, annealed, max_component, loglik = out
    return resp, annealed, max_component, loglik

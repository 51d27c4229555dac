"""The max and the softmax over the components of batch-last log-joints (..., K, N), compiled.

An independent GMM layer's training pass computes its log-joints batch last, (L, K, N)
(:mod:`dcgmm.stages.independent`), and its objective then reduces over K, an axis strided by
N. PyTorch's CPU kernels for a reduction over such an axis are slow. Written as a loop over
the K rows of N contiguous values, which inductor turns into one loop vectorised over N, on
preset E-indep's first layer (676 positions, K = 25, 100 digits) the max with its indices
took 2.78 -> 0.55 ms at one thread and 1.36 -> 0.33 ms at two, the softmax 3.44 -> 2.35 and
1.60 -> 1.22 ms; E-indep's whole training step was 1.04-1.05x as fast at one thread and
1.09-1.11x at two, in two runs of ``python -m benchmarks.bench_batch_last``
(``docs/speed_batch_last.md``, 2026-12-07; the same winners, the softmax within 6e-8).

The compiled forms run on the CPU in float32 for at least :data:`COMPILE_MIN_VALUES` values
(a chunk of 24 positions of E-indep's second layer, 60,000 values, took 0.057 ms either way
at two threads, a scratch microbenchmark); elsewhere PyTorch's own ``max`` and ``softmax`` run
(:mod:`dcgmm._compiling`). Over an innermost K (the shared layers' (..., K) layout) the same
loop was no faster (max 1.83 against 1.91 ms, softmax 2.05 against 2.09, (100, 26, 26, 25),
two threads, scratch microbenchmark), so it is not offered.
"""

import torch
from torch import Tensor

from dcgmm import _compiling

__all__ = ["COMPILE_MIN_VALUES", "max_over_components", "softmax_over_components"]

COMPILE_MIN_VALUES = 2**18


def _max_unrolled(values: Tensor) -> tuple[Tensor, Tensor]:
    """Return the max over axis -2 and its first index, one component row at a time.

    A NaN propagates to the max, as in ``Tensor.max``; its index is then that of the max of
    the values before the first NaN (``Tensor.max`` gives a NaN's). Testing for NaNs in the
    loop instead stopped inductor from vectorising it (2.4 instead of 0.24 ms).
    """
    best_values = values[..., 0, :]
    best = torch.zeros_like(best_values, dtype=torch.int64)
    for k in range(1, values.shape[-2]):
        larger = torch.maximum(best_values, values[..., k, :])
        best = torch.where(larger > best_values, k, best)
        best_values = larger
    return best_values, best


def _max_op_by_op(values: Tensor) -> tuple[Tensor, Tensor]:
    best_values, best = values.max(dim=-2)
    return best_values, best


def _softmax_unrolled(values: Tensor) -> Tensor:
    """Return the softmax over axis -2, its max taken one component row at a time."""
    top = values[..., 0, :]
    for k in range(1, values.shape[-2]):
        top = torch.maximum(top, values[..., k, :])
    exps = torch.exp(values - top.unsqueeze(-2))
    return exps / exps.sum(-2, keepdim=True)


def _softmax_op_by_op(values: Tensor) -> Tensor:
    return torch.softmax(values, dim=-2)


def _compiles(values: Tensor) -> bool:
    return (
        values.device.type == "cpu"
        and values.dtype == torch.float32
        and values.dim() >= 2
        and values.numel() >= COMPILE_MIN_VALUES
    )


def max_over_components(values: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``values.max(dim=-2)`` as (max, indices): the winners of (..., K, N) values."""
    best_values, best = _compiling.call(
        _max_unrolled, _max_op_by_op, values, applies=_compiles(values)
    )
    return best_values, best


def softmax_over_components(values: Tensor) -> Tensor:
    """Return ``torch.softmax(values, dim=-2)`` of (..., K, N) values."""
    out: Tensor = _compiling.call(
        _softmax_unrolled, _softmax_op_by_op, values, applies=_compiles(values)
    )
    return out

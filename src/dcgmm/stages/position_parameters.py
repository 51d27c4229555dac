r"""The element-wise passes over an independent GMM layer's per-position parameters, fused.

An independent layer has one mixture per position: preset E's second layer in the recipes'
form holds 1.44M means and as many square-root precisions, 144 times a shared layer's. Every
training step turns them into the filters of the grouped product,
:math:`W = [-\tfrac12 P, \mu P]` and the bias :math:`\sum_d \log s_d - \tfrac12 \sum_d \mu_d^2
P_d - \tfrac D2 \log 2\pi + \log \pi`, and, from the batch's statistics, into their descent
gradients (:func:`dcgmm.layers.gmm_gradients.descent_gradients`). Run op by op, that is some
twenty element-wise passes over the parameters: 9 of the 39 ms that layer's training pass took
(one thread, 2026-12-07), where the grouped products themselves took 20.

On the CPU in float32, for layers of at least :data:`COMPILE_MIN_VALUES` values per
parameter, both functions run through ``torch.compile`` (inductor generates one vectorised C++
loop per output): on that layer's shape, one thread, filters 3.0 -> 1.5 ms and gradients
3.1 -> 0.9 ms (a microbenchmark with the data in the cache; inside the training step, op by
op, they had taken 4.7 and 4.3 ms). The first call of a shape compiles it (about 14 s in a
fresh process, a few seconds once inductor's on-disk cache holds it). Set
``DCGMM_COMPILE=0`` to run op by op; where compiling fails (no C++ compiler), a warning says
so once and the op-by-op form runs from then on (:mod:`dcgmm._compiling`).
Elsewhere (float64, GPUs, small layers) the functions run op by op: the same formulas.
"""

import torch
from torch import Tensor

from dcgmm import _compiling
from dcgmm._numerics import LOG_2PI
from dcgmm.layers import gmm_gradients as grads

__all__ = [
    "COMPILE_MIN_VALUES",
    "descent_gradients",
    "filters",
    "observed_filters",
    "sum_of_logs",
]

# Below this many values per parameter tensor compiling saves too little to pay for its
# compilation (a second or more per shape). Lowered from 2^20 on 2026-12-07, which left
# G-indep's second layer (680,000 values) and the first layers of the recipes' presets
# (152,100) op by op: whole training steps, same process, 9 interleaved rounds, 2^20 -> 2^17:
# G-indep 30.47 -> 29.30 ms, D-indep 32.35 -> 32.03, E-indep 36.02 -> 35.48 at 2 threads,
# G-indep 50.47 -> 49.93 at 1.
COMPILE_MIN_VALUES = 2**17


def sum_of_logs(values: Tensor) -> Tensor:
    """Return ``values.log().sum(-1)`` for values in [1e-4, 1e4], as logs of products of 8.

    The log is the costly element-wise function here (1.9 of the 4.7 ms the filters took op
    by op); products of up to 8 values need 8 times fewer. Square-root precisions lie in
    [0.01, 4.48] (``GMM.project_``), so a product of 8 lies in [1e-16, 1.6e5]; even [1e-4,
    1e4] keeps it inside float32's normal range.
    """
    for _ in range(3):
        dim = values.shape[-1]
        if dim % 2:
            break
        values = values[..., : dim // 2] * values[..., dim // 2 :]
    return values.log().sum(-1)


def _filters_fused(means: Tensor, sqrt_precisions: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """Return the filters in the functional form that ``torch.compile`` fuses (no ``out=``)."""
    precisions = sqrt_precisions * sqrt_precisions
    linear = means * precisions
    weight = torch.cat([-0.5 * precisions, linear], dim=-1)
    return weight, _bias(means, sqrt_precisions, linear, logits)


def _filters_op_by_op(
    means: Tensor, sqrt_precisions: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor]:
    """Return the filters op by op, written into the halves of W (no concatenation)."""
    dim = means.shape[-1]
    weight = means.new_empty(*means.shape[:-1], 2 * dim)
    square, linear = weight[..., :dim], weight[..., dim:]
    torch.mul(sqrt_precisions, sqrt_precisions, out=linear)  # P, then mu P in place
    torch.mul(linear, -0.5, out=square)
    linear.mul_(means)
    return weight, _bias(means, sqrt_precisions, linear, logits)


def _bias(means: Tensor, sqrt_precisions: Tensor, linear: Tensor, logits: Tensor) -> Tensor:
    """Return the bias from the parameters and ``linear`` = mu P."""
    return (
        sum_of_logs(sqrt_precisions)
        - 0.5 * (means * linear).sum(-1)
        - 0.5 * means.shape[-1] * LOG_2PI
        + torch.log_softmax(logits, dim=-1)
    )


def _compiles(means: Tensor) -> bool:
    """Return whether the passes over these parameters run compiled (module docstring)."""
    return (
        means.device.type == "cpu"
        and means.dtype == torch.float32
        and means.numel() >= COMPILE_MIN_VALUES
    )


def filters(means: Tensor, sqrt_precisions: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    r"""Return :math:`W = [-\tfrac12 P, \mu P]` (..., K, 2D) and the bias (..., K).

    ``means`` and ``sqrt_precisions`` are (..., K, D), ``logits`` (..., K), detached.
    """
    weight, bias = _compiling.call(
        _filters_fused, _filters_op_by_op, means, sqrt_precisions, logits,
        applies=_compiles(means),
    )  # fmt: skip
    return weight, bias


def _observed_filters_fused(
    means: Tensor, sqrt_precisions: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor]:
    """Return :func:`observed_filters`: its three parts computed and laid side by side."""
    precisions = sqrt_precisions * sqrt_precisions
    per_entry = sqrt_precisions.log() - 0.5 * means * means * precisions - 0.5 * LOG_2PI
    weight = torch.cat([-0.5 * precisions, means * precisions, per_entry], dim=-1)
    return weight, torch.log_softmax(logits, dim=-1)


def observed_filters(
    means: Tensor, sqrt_precisions: Tensor, logits: Tensor
) -> tuple[Tensor, Tensor]:
    r"""Return the weight (..., K, 3D) and bias (..., K) of the log-joints of partly observed input.

    The weight lays side by side, per entry, :math:`[-\tfrac12 P, \mu P, \log s - \tfrac12
    \mu^2 P - \tfrac12 \log 2\pi]`, the weights of :math:`[o x^2, o x, o]` (o the mask of
    observed entries); the bias is :math:`\log \pi`. In-painting computes them once per
    layer and call: for E-indep's second layer, op by op, about ten passes over its 1.44M
    means and a concatenation of the three parts.
    """
    weight, bias = _compiling.call(
        _observed_filters_fused, _observed_filters_fused, means, sqrt_precisions, logits,
        applies=_compiles(means),
    )  # fmt: skip
    return weight, bias


def descent_gradients(
    means: Tensor, sqrt_precisions: Tensor, logits: Tensor, stats: grads.Statistics
) -> tuple[Tensor, Tensor, Tensor]:
    """Return :func:`dcgmm.layers.gmm_gradients.descent_gradients`, fused where it applies."""
    loss_means, loss_sqrt_prec, loss_logits = _compiling.call(
        grads.descent_gradients, grads.descent_gradients, means, sqrt_precisions, logits, stats,
        applies=_compiles(means),
    )  # fmt: skip
    return loss_means, loss_sqrt_prec, loss_logits

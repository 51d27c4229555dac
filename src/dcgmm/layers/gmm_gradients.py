r"""Closed-form gradients of a GMM layer's objectives, without autograd.

Every objective is a function of the log-joints :math:`\ell_{mk}` of the M = N*H*W rows, so
its gradient factors through :math:`R = \partial\,\overline{obj} / \partial \ell` (M, K). Given
R, the parameter gradients need only three sufficient statistics per component,

.. math::
    r_k = \sum_m R_{mk}, \qquad A_{kc} = \sum_m R_{mk} x_{mc}, \qquad
    B_{kc} = \sum_m R_{mk} x_{mc}^2,

which are two matrix products of the same size as the forward pass (or one convolution
weight-gradient when the folding is fused in, see :mod:`dcgmm.stages`). With
:math:`P = s^2`:

.. math::
    \partial_{\mu_{kc}} = P_{kc} (A_{kc} - r_k \mu_{kc}), \quad
    \partial_{s_{kc}} = r_k / s_{kc} - s_{kc} (B_{kc} - 2\mu_{kc} A_{kc} + r_k \mu_{kc}^2),
    \quad \partial_{a_k} = r_k - \pi_k \textstyle\sum_j r_j .

This replaces autograd's element-wise passes over the (M, C) input with nothing: the
statistics are the only traffic. ``tests/test_gmm_gradients.py`` checks every formula
against autograd in float64.
"""

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from dcgmm.layers import batch_last

__all__ = [
    "HardObjectiveGradient",
    "ObjectiveGradient",
    "Statistics",
    "WinnerRows",
    "descent_gradients",
    "hard_objective_gradient",
    "input_gradient",
    "objective_gradient",
    "set_descent_gradients",
    "statistics",
    "winners",
    "with_dense_rows",
]

if TYPE_CHECKING:  # gmm.py imports this module
    from dcgmm.layers.gmm import Objective


class ObjectiveGradient(NamedTuple):
    r"""The per-row objective and its gradient with respect to the log-joints.

    Attributes
    ----------
    values : Tensor, shape (...)
        The objective at every row (position of every sample).
    d_log_joint : Tensor, shape (..., K)
        :math:`R = \partial\,\mathrm{mean}(values) / \partial \ell` (already divided by
        the number of rows).
    weight : Tensor, shape (K,)
        :math:`r = \sum_{rows} R`, computed without a pass over R where the gradient is
        one-hot (a histogram of the winners instead).
    winner_rows : WinnerRows or None
        For the hard objectives, R as a table lookup: row m of R is row ``best[m]`` of a
        (K, K) table. A product ``R @ A`` is then ``(table @ A)[best]``, a gather instead of
        a matrix product over the rows. None for ``"loglik"``.
    """

    values: Tensor
    d_log_joint: Tensor
    weight: Tensor
    winner_rows: "WinnerRows | None" = None


class WinnerRows(NamedTuple):
    """The rows of a hard objective's gradient R: ``R[m] = table[best[m]]``.

    ``best`` has R's leading shape. ``table`` is the annealing kernel scaled by 1 / rows
    (K, K), or, at the radius floor and for ``"max_component"``, the 0-d scale of an
    identity table (R is then one-hot).
    """

    best: Tensor
    table: Tensor

    def table_times(self, a: Tensor) -> Tensor:
        """Return ``table @ a`` for ``a`` of shape (..., K, C)."""
        return a * self.table if self.table.dim() == 0 else self.table @ a


class Statistics(NamedTuple):
    """Responsibility-weighted sums ``r = sum R``, ``first = sum R x``, ``second = sum R x^2``.

    Shapes are (K,), (K, C), (K, C) for a shared layer and (H, W, K), (H, W, K, C) twice for
    an independent one.
    """

    weight: Tensor
    first: Tensor
    second: Tensor


def objective_gradient(
    log_joint: Tensor,
    objective: "Objective",
    kernel: Tensor | None,
    responsibilities: Tensor | None,
    *,
    rows: int | None = None,
    components_dim: int = -1,
) -> ObjectiveGradient:
    r"""Return the objective per row and its gradient w.r.t. the log-joints.

    Parameters
    ----------
    log_joint : Tensor, shape (..., K)
        :math:`\ell = \log\pi_k + \log N_k(x)`.
    objective : {"annealed", "max_component", "loglik"}
        Which objective.
    kernel : Tensor (K, K) or None
        The toroidal smoothing kernel of the annealed objective; ``None`` at the radius floor
        (the identity) or for the other objectives.
    responsibilities : Tensor, shape (..., K), or None
        ``softmax(log_joint)`` (the forward output; reused by the exact log-likelihood), or
        None where the caller has no use for it (sharpening): then computed only if needed.
    rows : int, optional
        The number of rows the mean runs over: by default those of ``log_joint``; more where
        ``log_joint`` is one chunk of them (an independent layer's positions, chunk by chunk).
    components_dim : {-1, -2}
        Where the K components lie: last (rows (..., K)), or second to last ((..., K, N), the
        batch-last layout of an independent layer's hand-over, :mod:`dcgmm.stages`). The
        values then have shape (..., N) and the gradient the layout of ``log_joint``.
    """
    if components_dim not in (-1, -2):
        raise ValueError(f"components_dim must be -1 or -2; got {components_dim}")
    dim = components_dim
    k = log_joint.shape[dim]
    rows = log_joint.numel() // k if rows is None else rows
    if objective == "loglik":
        values = torch.logsumexp(log_joint, dim=dim)
        if responsibilities is None:
            responsibilities = torch.softmax(log_joint, dim=dim)
        grad = responsibilities / rows
        per_component = grad if dim == -1 else grad.sum(-1)
        return ObjectiveGradient(values, grad, per_component.reshape(-1, k).sum(0))
    hard = hard_objective_gradient(log_joint, objective, kernel, rows=rows, components_dim=dim)
    return with_dense_rows(hard, log_joint, rows=rows, components_dim=dim)


class HardObjectiveGradient(NamedTuple):
    """A hard objective's values, ``r = sum R`` and R as a table lookup, without R itself."""

    values: Tensor
    weight: Tensor
    winner_rows: WinnerRows


def hard_objective_gradient(
    log_joint: Tensor,
    objective: "Objective",
    kernel: Tensor | None,
    *,
    rows: int | None = None,
    components_dim: int = -1,
) -> HardObjectiveGradient:
    """Return :func:`objective_gradient` of a hard objective with R left as a table lookup.

    For callers that only need products with R, which the lookup gives more cheaply
    (:mod:`dcgmm.stages.window_sums`); the arguments as in :func:`objective_gradient`.
    """
    if objective == "loglik":
        raise ValueError("the log-likelihood's gradient is no table lookup; it is dense")
    k = log_joint.shape[components_dim]
    rows = log_joint.numel() // k if rows is None else rows
    values, best = winners(log_joint, objective, kernel, components_dim=components_dim)
    wins = torch.bincount(best.reshape(-1), minlength=k).to(log_joint.dtype)
    if objective == "annealed" and kernel is not None:
        # The max picks row k* of g as the gradient. Scaling the (K, K) kernel instead of the
        # (..., K) result saves a pass over the rows.
        scaled = kernel / rows
        return HardObjectiveGradient(values, wins @ scaled, WinnerRows(best, scaled))
    scale = torch.tensor(1.0 / rows, dtype=log_joint.dtype, device=log_joint.device)
    return HardObjectiveGradient(values, wins / rows, WinnerRows(best, scale))


def with_dense_rows(
    hard: "HardObjectiveGradient",
    log_joint: Tensor,
    *,
    rows: int | None = None,
    components_dim: int = -1,
) -> ObjectiveGradient:
    """Return ``hard`` as an :class:`ObjectiveGradient`: R built, in the layout of ``log_joint``.

    The arguments as in :func:`objective_gradient`, which is this after
    :func:`hard_objective_gradient` for the hard objectives.
    """
    dim = components_dim
    k = log_joint.shape[dim]
    rows = log_joint.numel() // k if rows is None else rows
    best, table = hard.winner_rows
    if table.dim():
        grad = table.index_select(0, best.reshape(-1)).view(*best.shape, k)
        if dim == -2:
            grad = grad.transpose(-1, -2)  # a view in the layout of log_joint
    else:
        grad = torch.zeros_like(log_joint).scatter_(dim, best.unsqueeze(dim), 1.0 / rows)
    return ObjectiveGradient(hard.values, grad, hard.weight, hard.winner_rows)


def winners(
    log_joint: Tensor, objective: "Objective", kernel: Tensor | None, *, components_dim: int = -1
) -> tuple[Tensor, Tensor]:
    r"""Return the values and winning components of a hard objective (not ``"loglik"``).

    The annealed objective is :math:`\max_k \sum_j g_{kj} \ell_j` (g the kernel; the identity
    at the radius floor, ``kernel=None``), the max-component one :math:`\max_k \ell_k`.
    The components lie along ``components_dim`` (-1 or -2, as in :func:`objective_gradient`).
    """
    smoothed = log_joint
    if objective == "annealed" and kernel is not None:
        smoothed = log_joint @ kernel.T if components_dim == -1 else kernel @ log_joint
    if components_dim == -2:  # K strided by the batch: a loop over K, vectorised over it
        return batch_last.max_over_components(smoothed)
    return smoothed.max(dim=components_dim)


def statistics(x: Tensor, objective: ObjectiveGradient, *, independent: bool) -> Statistics:
    """Return the sufficient statistics from an (N, H, W, C) input and the objective's R."""
    d_log_joint = objective.d_log_joint
    if independent:  # per position: r is a sum over the batch only
        weight = d_log_joint.sum(0)
        first = torch.einsum("nhwk,nhwc->hwkc", d_log_joint, x)
        second = torch.einsum("nhwk,nhwc->hwkc", d_log_joint, x * x)
        return Statistics(weight, first, second)
    c, k = x.shape[-1], d_log_joint.shape[-1]
    rows_x, rows_r = x.reshape(-1, c), d_log_joint.reshape(-1, k)
    return Statistics(objective.weight, rows_r.T @ rows_x, rows_r.T @ (rows_x * rows_x))


def input_gradient(
    x: Tensor,
    objective: ObjectiveGradient,
    means: Tensor,
    sqrt_precisions: Tensor,
    *,
    independent: bool,
    scale: float = 1.0,
) -> Tensor:
    r"""Return :math:`\partial J / \partial x` for ``scale`` times the objective's R.

    With :math:`\partial \ell_k / \partial x_c = P_{kc} (\mu_{kc} - x_c)`,

    .. math::
        \frac{\partial J}{\partial x_c} = \sum_k R_k P_{kc} \mu_{kc}
        - x_c \sum_k R_k P_{kc},

    two products of R with the (K, C) parameters, per position for an independent layer:
    what sharpening climbs with, without autograd's (N, H, W, K, C) intermediates. Where R's
    rows are rows of a (K, K) table (:class:`WinnerRows`) and there are more rows than
    components, the products are taken with the table and gathered by winner instead.
    ``x`` is (N, H, W, C), R (N, H, W, K).
    """
    precisions = sqrt_precisions * sqrt_precisions
    pulled = precisions * means
    d_log_joint, lookup = objective.d_log_joint, objective.winner_rows
    n_rows, k = d_log_joint.numel() // d_log_joint.shape[-1], d_log_joint.shape[-1]
    if lookup is not None and n_rows > k:
        both = lookup.table_times(torch.cat([pulled, precisions], dim=-1)).mul_(scale)
        if independent:  # per position (h, w): gather row best[n, h, w] of table (h, w)
            height, width = both.shape[:2]
            base = torch.arange(height * width, device=x.device).view(height, width) * k
            picked = both.reshape(-1, both.shape[-1]).index_select(
                0, (lookup.best + base).reshape(-1)
            )
        else:
            picked = both.index_select(0, lookup.best.reshape(-1))
        picked = picked.view(*x.shape[:-1], -1)
        c = x.shape[-1]
        return torch.addcmul(picked[..., :c], x, picked[..., c:], value=-1.0)
    d_log_joint = d_log_joint * scale
    if independent:  # per position (h, w): R (N, K) @ (K, C)
        toward = torch.einsum("nhwk,hwkc->nhwc", d_log_joint, pulled)
        weight = torch.einsum("nhwk,hwkc->nhwc", d_log_joint, precisions)
    else:
        toward, weight = d_log_joint @ pulled, d_log_joint @ precisions
    return toward.addcmul_(x, weight, value=-1.0)


def descent_gradients(
    means: Tensor, sqrt_precisions: Tensor, logits: Tensor, stats: Statistics
) -> tuple[Tensor, Tensor, Tensor]:
    """Return the gradients of the loss ``-objective`` w.r.t. (means, sqrt_precisions, logits).

    Shapes as the layer's parameters and :class:`Statistics`: (K, D) for a shared layer,
    (H, W, K, D) for an independent one (:mod:`dcgmm.stages.position_parameters` fuses them).
    """
    mu, s = means, sqrt_precisions
    weight = stats.weight.unsqueeze(-1)
    # Few passes over the parameters (an independent layer has one set per position):
    # t = A - r mu; spread = B - 2 mu A + r mu^2 = B - mu (A + t).
    t = torch.addcmul(stats.first, weight, mu, value=-1.0)
    spread = torch.addcmul(stats.second, mu, stats.first + t, value=-1.0)
    loss_sqrt_prec = torch.addcdiv(spread.mul_(s), weight, s, value=-1.0)  # s spread - r/s
    loss_means = t.mul_(s).mul_(s).neg_()  # -P (A - r mu)
    pi = torch.softmax(logits, dim=-1)
    loss_logits = pi * stats.weight.sum(-1, keepdim=True) - stats.weight
    return loss_means, loss_sqrt_prec, loss_logits


def set_descent_gradients(
    means: nn.Parameter, sqrt_precisions: nn.Parameter, logits: nn.Parameter, stats: Statistics
) -> None:
    """Store minus the objective's gradient in ``.grad`` of a GMM layer's three parameters.

    ``torch.optim.SGD`` minimises, so the stored gradient is that of the loss ``-objective``
    (:func:`descent_gradients`); ``.grad`` is overwritten, not accumulated.
    """
    params = (means, sqrt_precisions, logits)
    gradients = descent_gradients(means.detach(), sqrt_precisions.detach(), logits.detach(), stats)
    for param, grad in zip(params, gradients, strict=True):
        param.grad = grad.to(param.dtype)

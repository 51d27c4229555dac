r"""Log-densities of diagonal Gaussians by the matmul expansion (no (..., K, C) temporary).

.. math::
    \|x - \mu_k\|^2_{P_k} = x^2 P_k^\top - 2 x (\mu_k P_k)^\top + \textstyle\sum \mu_k^2 P_k
"""

import torch
from jaxtyping import Float
from torch import Tensor

from dcgmm._numerics import LOG_2PI

__all__ = [
    "diag_gaussian_log_density",
    "diag_gaussian_log_density_per_position",
    "observed_log_density",
]


def diag_gaussian_log_density(
    x: Float[Tensor, "*B C"], means: Float[Tensor, "K C"], sqrt_precisions: Float[Tensor, "K C"]
) -> Float[Tensor, "*B K"]:
    r"""Return :math:`\log N(x \mid \mu_k, \mathrm{diag}(s_k^{-2}))` for every component.

    .. math::
        \log N_k(x) = \sum_c \log s_{kc} - \tfrac12 \sum_c s_{kc}^2 (x_c - \mu_{kc})^2
                      - \tfrac{C}{2} \log 2\pi

    The squared distance is expanded as ``x^2 @ P^T - 2 x @ (mu P)^T + sum(mu^2 P)`` with
    ``P = s^2``: two matrix products instead of a broadcast over (..., K, C).
    """
    precisions = sqrt_precisions * sqrt_precisions
    sq_dist = (
        (x * x) @ precisions.T
        - 2.0 * (x @ (means * precisions).T)
        + (means * means * precisions).sum(-1)
    ).clamp_min(0.0)  # cancellation can go below 0
    log_det = sqrt_precisions.log().sum(-1)
    return log_det - 0.5 * sq_dist - 0.5 * x.shape[-1] * LOG_2PI


def diag_gaussian_log_density_per_position(
    x: Float[Tensor, "N H W C"],
    means: Float[Tensor, "H W K C"],
    sqrt_precisions: Float[Tensor, "H W K C"],
) -> Float[Tensor, "N H W K"]:
    """Return the log-densities of independent per-position components (same expansion)."""
    precisions = sqrt_precisions * sqrt_precisions
    # n batch, h w positions, k components, c channels
    sq_dist = (
        torch.einsum("nhwc,hwkc->nhwk", x * x, precisions)
        - 2.0 * torch.einsum("nhwc,hwkc->nhwk", x, means * precisions)
        + (means * means * precisions).sum(-1)
    ).clamp_min(0.0)
    log_det = sqrt_precisions.log().sum(-1)
    return log_det - 0.5 * sq_dist - 0.5 * x.shape[-1] * LOG_2PI


def observed_log_density(
    x: Float[Tensor, "N H W C"],
    observed: Float[Tensor, "N H W C"],
    means: Tensor,
    sqrt_precisions: Tensor,
    *,
    independent: bool,
) -> Float[Tensor, "N H W K"]:
    r"""Return the log-density of the observed dimensions only (missing ones marginalised).

    For a diagonal Gaussian, integrating out a dimension removes its term:

    .. math::
        \log N_k(x_o) = \sum_c o_c \big(\log s_{kc} - \tfrac12 s_{kc}^2 (x_c - \mu_{kc})^2
                          - \tfrac12 \log 2\pi\big)

    with ``o`` = 1 for observed and 0 for missing entries. Same matmul expansion as
    :func:`diag_gaussian_log_density`.
    """
    precisions = sqrt_precisions * sqrt_precisions
    ox = observed * x
    spec = "nhwc,hwkc->nhwk" if independent else "nhwc,kc->nhwk"
    sq_dist = (
        torch.einsum(spec, ox * x, precisions)
        - 2.0 * torch.einsum(spec, ox, means * precisions)
        + torch.einsum(spec, observed, means * means * precisions)
    ).clamp_min(0.0)
    log_det = torch.einsum(spec, observed, sqrt_precisions.log())
    return log_det - 0.5 * sq_dist - 0.5 * LOG_2PI * observed.sum(-1, keepdim=True)

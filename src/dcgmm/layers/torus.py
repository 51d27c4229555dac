"""The sqrt(K) x sqrt(K) torus the annealed objective lays a GMM layer's components on."""

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["torus_grid_side", "torus_smoothing_kernel"]


def torus_grid_side(n_components: int) -> int:
    """Return sqrt(K), or raise a ``ValueError`` if K is not a perfect square."""
    side = math.isqrt(n_components)
    if side * side != n_components:
        lo, hi = side * side, (side + 1) * (side + 1)
        raise ValueError(
            f"the annealed loss lays the K components on a sqrt(K) x sqrt(K) torus, so K must "
            f"be a perfect square; got K={n_components}. Use K={lo} or K={hi}, or train with "
            "objective 'max_component' or 'loglik'"
        )
    return side


def torus_smoothing_kernel(
    n_components: int, sigma: Tensor | float, *, dtype: torch.dtype, device: torch.device
) -> Float[Tensor, "K K"]:
    r"""Return the row-normalised Gaussian kernel on the sqrt(K) x sqrt(K) torus.

    ``g[k, j] = exp(-d^2(k, j) / (2 sigma^2)) / sum_j(...)`` with ``d`` the wrap-around
    Euclidean distance between grid cells (row-major). At ``sigma = 0.01`` it is the identity.
    """
    side = torus_grid_side(n_components)
    idx = torch.arange(n_components, device=device)
    rows, cols = idx // side, idx % side
    dr = (rows[:, None] - rows[None, :]).abs()
    dc = (cols[:, None] - cols[None, :]).abs()
    dr = torch.minimum(dr, side - dr).to(dtype)
    dc = torch.minimum(dc, side - dc).to(dtype)
    sigma_t = torch.as_tensor(sigma, dtype=dtype, device=device)
    # log-space softmax: the identity limit at small sigma stays exact (no 0/0).
    return torch.softmax(-(dr * dr + dc * dc) / (2.0 * sigma_t * sigma_t), dim=1)

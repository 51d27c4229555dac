"""Drawing one component per row from non-negative scores (sampling a GMM layer)."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["draw_best", "draw_categorical"]


def draw_categorical(
    weights: Float[Tensor, "R K"], *, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one index per row with probability proportional to ``weights`` (>= 0).

    Rows that are all zero draw uniformly. Inverse-CDF sampling: one uniform number per row
    (``torch.multinomial`` draws K exponentials per row, ten times slower for K = 25).
    """
    k = weights.shape[-1]
    cdf = weights.cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand((weights.shape[0], 1), generator=generator, dtype=cdf.dtype, device=cdf.device)
    # The first index whose cumulative weight exceeds u * total; zero-weight entries never
    # exceed their predecessor, so they are never drawn.
    chosen = torch.searchsorted(cdf, u * total, right=True)
    # An all-zero row draws uniformly: floor(u K), what the search gives on a cdf of 1..K.
    chosen = torch.where(total > 0, chosen, (u * k).long())
    return chosen.squeeze(-1).clamp_max(k - 1)


def draw_best(scores: Float[Tensor, "R K"], *, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row among the row's largest entries (top-S with S = 1, ties kept).

    A row with one maximum takes it; only rows with tied maxima draw, uniformly among the
    tied entries (the top layer's uniform start ties every component). The same distribution
    as :func:`draw_categorical` after keeping the maxima, in two passes instead of five.
    """
    best, chosen = scores.max(-1)
    is_best = scores == best[:, None]
    tied = is_best.sum(-1) > 1
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(-1)
        picked = draw_categorical(is_best[rows].to(scores.dtype), generator=generator)
        chosen = chosen.index_put((rows,), picked)
    return chosen

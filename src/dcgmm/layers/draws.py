"""Drawing one component per row from non-negative scores (sampling a GMM layer)."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["draw_best", "draw_categorical", "expectation_weights", "keep_top_s"]


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


def keep_top_s(control: Tensor, top_s: int | None) -> Tensor:
    """Return ``control`` with entries below 0 and outside each row's ``top_s`` largest set to 0.

    Rows run along the last axis; entries tied with the S-th largest are kept. A new tensor.
    """
    kept = control.clamp_min(0.0)
    k = kept.shape[-1]
    if top_s is not None and top_s < k:
        kth = kept.amax(-1, keepdim=True) if top_s == 1 else kept.topk(top_s).values[..., -1:]
        kept.masked_fill_(kept < kth, 0.0)
    return kept


def expectation_weights(control: Tensor, top_s: int | None) -> Tensor:
    """Return the weights of the conditional expectation: the kept control, summing to 1.

    As :func:`keep_top_s`, normalised along the last axis; a row with nothing kept weighs
    every entry equally.
    """
    weights = keep_top_s(control, top_s)
    weights = torch.where(weights.sum(-1, keepdim=True) > 0, weights, 1.0)
    return weights / weights.sum(-1, keepdim=True)


def draw_best(scores: Float[Tensor, "R K"], *, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per row among the row's largest entries (top-S with S = 1, ties kept).

    Entries below 0 count as 0, as in every control signal. A row with one maximum takes
    it; only rows with tied maxima draw, uniformly among the tied entries (the top layer's
    uniform start ties every component, a row of non-positive entries ties all K). The same
    distribution as :func:`draw_categorical` after keeping the maxima.

    The rows are copied into a buffer whose width is a multiple of 8, padded with -1:
    torch's CPU reductions along a row vectorise only then (the maximum of 67,600 rows of
    25 took 2.3 ms, of rows of 32 0.46 ms, one thread). The winner's index and the number
    of winners are two matrix-vector products of the 0/1 winner mask.
    """
    rows, k = scores.shape
    width = -(-k // _VECTOR) * _VECTOR
    buffer = scores.new_empty((rows, width))
    buffer[:, :k] = scores
    buffer.clamp_min_(0.0)
    buffer[:, k:] = -1.0  # never a maximum: every real entry is >= 0 now
    best = buffer.amax(-1, keepdim=True)
    # The 0/1 winner mask, in float32 at least: its products below must count exactly.
    exact = buffer.dtype if buffer.dtype in (torch.float32, torch.float64) else torch.float32
    is_best = torch.eq(buffer, best, out=buffer.new_empty(buffer.shape, dtype=exact))
    count = is_best.sum(-1)
    # The sum of the winners' indices: the index itself where there is one winner (exact up
    # to 2**24 components).
    chosen = torch.mv(is_best, torch.arange(width, dtype=exact, device=buffer.device))
    chosen = chosen.long()
    tied = count > 1
    if bool(tied.any()):
        tied_rows = tied.nonzero().squeeze(-1)
        picked = draw_categorical(is_best[tied_rows, :k], generator=generator)
        chosen = chosen.index_put((tied_rows,), picked)
    return chosen


# Floats per vector register (AVX2, float32): row reductions vectorise at multiples of it.
_VECTOR = 8

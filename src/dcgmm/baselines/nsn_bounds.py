"""Bounds on a patch's scores under the filters other than its best, carried across M-steps.

The E-step of the NSN fit (:mod:`dcgmm.baselines.nsn_estep`) skips a patch when a lower bound
on its score under its best filter beats an upper bound on its score under every other filter.
Two ways to keep that upper bound, both exact in real arithmetic:

* :class:`FilterBounds` (Elkan's k-means bounds): a lower bound on the distance from every
  patch to every filter's mean, an (M, K) float32 matrix. A move of filter k's mean by delta_k
  lowers column k by delta_k; the bound on the others is the max over k of the score at that
  distance. Tight, and a few passes over the matrix an iteration: worth it when a patch's full
  scoring (2 D K flops) costs much more than that, i.e. for long patches.
* :class:`PatchBounds` (Hamerly's): one float64 number a patch, an upper bound t on all its
  other scores. A score of at most t under filter k means a distance of at least r_k(t) from
  its old mean, hence at least ``r_k(t) - delta_k`` from the new one and a new score of at most
  h_k(t); the new bound is ``max_k h_k(t)``, one monotone function of t for all patches,
  tabulated on a grid of t. Loose (the filter that moved most loosens every patch; scoring the
  loosest few exactly instead was measured slower on MNIST's first layer) but a few operations
  a patch: the choice for short patches.

New filters have no bound yet: the E-step scores them exactly (``follow`` names them). Distances
from float32 products carry rounding; :func:`distance_slack` widens them by a bound on it, so
that a lower bound stays below the true distance.
"""

import math
from typing import Protocol

import torch
from torch import Tensor

__all__ = [
    "DIFFERENCE_RTOL",
    "HALF_LOG_2PI",
    "Bounds",
    "FilterBounds",
    "PatchBounds",
    "Scorer",
    "distance_slack",
    "margin_of",
]

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# Relative rounding allowed in |x|^2 - 2 x.mu + |mu|^2 computed in float32, of |x|^2 + |mu|^2.
SQUARED_DISTANCE_RTOL = 1e-5
# A bound decides only with this relative margin over what it must beat.
MARGIN = 1e-6
# Relative rounding allowed in a distance computed from float32 differences.
DIFFERENCE_RTOL = 1e-5
GRID_POINTS = 1024  # where PatchBounds tabulates its bound


def margin_of(score: Tensor) -> Tensor:
    """Return the margin by which a bound must beat a score to decide (relative)."""
    return MARGIN * (1 + score.abs())


def distance_slack(norms: Tensor, mean_norms: Tensor) -> Tensor:
    """Bound on the float32 rounding of a squared distance from ``|x|^2`` and ``|mu|^2``.

    Broadcasts: ``norms[:, None]`` and ``mean_norms`` give the (M, K) matrix.
    """
    return SQUARED_DISTANCE_RTOL * (norms + mean_norms)


class Scorer:
    """A filter's score as a function of the distance to its mean (logpdf similarities)."""

    def __init__(self, d: int, per_dim: bool) -> None:
        self.d, self.scale = d, 1.0 if per_dim else float(d)

    def score(self, sq: Tensor, sigma: Tensor) -> Tensor:
        """Return the score at squared distance ``sq`` from a filter of spread ``sigma``."""
        return self.scale * (-sq / (2 * self.d * sigma.square()) - sigma.log() - HALF_LOG_2PI)

    def terms(self, sigmas: Tensor) -> tuple[Tensor, Tensor]:
        """``(-1 / (2 D sigma^2), -log sigma - log(2 pi) / 2)``: score = scale (a sq + b)."""
        return -1.0 / (2 * self.d * sigmas.square()), -sigmas.log() - HALF_LOG_2PI

    def least_distance(self, s: Tensor, sigma: Tensor) -> Tensor:
        """Return the smallest distance from the mean at which a patch scores at most ``s``."""
        room = -s / self.scale - sigma.log() - HALF_LOG_2PI
        return (2 * self.d * sigma.square() * room.clamp_min(0.0)).sqrt()


class Bounds(Protocol):
    """What the E-step asks of its bounds (rows: a batch's slice of all patches)."""

    # The filters whose distances the E-step computes for ``rival`` (a product) at this sweep.
    fresh: Tensor

    def start(self, means: Tensor, sigmas: Tensor) -> None:
        """Take this sweep's bank (float32)."""

    def rival(self, rows: slice, best: Tensor, norms: Tensor, fresh_sq: Tensor | None) -> Tensor:
        """Return an upper bound (m,) on the scores of ``rows`` under all but their best."""

    def settle(self, rows: slice, settled: Tensor, rival: Tensor) -> None:
        """Keep what the ``settled`` patches of ``rows`` need, ``rival`` their bound."""

    def reset(self, rows: slice, idx: Tensor, norms: Tensor, sq: Tensor, best: Tensor) -> None:
        """Take the full scoring of patches ``idx`` of ``rows`` (squared distances, new best)."""

    def follow(
        self, kept: Tensor, delta: Tensor, reach: Tensor, *, best: Tensor, old_sigmas: Tensor,
        sigmas: Tensor,
    ) -> None:  # fmt: skip
        """Move the bounds to the M-step's new bank (kept filters first, then new ones)."""


class FilterBounds:
    """A lower bound on every patch's distance to every filter's mean, except its best's.

    The (M, max_filters) matrix is allocated once; the bank uses its first K columns.
    """

    def __init__(self, n_patches: int, n_filters: int, capacity: int, scorer: Scorer) -> None:
        self.scorer = scorer
        self.lower = torch.zeros(n_patches, max(capacity, n_filters))  # +inf: the best's column
        self.k = n_filters
        self.fresh = torch.arange(0)

    def start(self, means: Tensor, sigmas: Tensor) -> None:
        """Take this sweep's bank (float32)."""
        self._mean_norms = means.square().sum(-1)
        self._neg_inv_two_d_var, self._peak = self.scorer.terms(sigmas)

    def rival(self, rows: slice, best: Tensor, norms: Tensor, fresh_sq: Tensor | None) -> Tensor:
        """Upper bound (m,) on the other scores of ``rows`` under the bank of this sweep.

        ``fresh_sq`` (m, new) are their float32 squared distances to the new filters, ``norms``
        their ``|x|^2``: new filters are scored exactly, a product with a few columns, which is
        cheap next to the full one for long patches and much tighter than ``reach``.
        """
        lower = self.lower[rows, : self.k]
        if fresh_sq is not None:
            slack = distance_slack(norms[:, None], self._mean_norms[self.fresh])
            lower[:, self.fresh] = (fresh_sq - slack).clamp_min_(0.0).sqrt_()
        bound = lower.square().mul_(self._neg_inv_two_d_var).add_(self._peak).amax(-1)
        return bound.double() * self.scorer.scale  # margin_of covers the float32 rounding

    def settle(self, rows: slice, settled: Tensor, rival: Tensor) -> None:
        """Nothing to do: the matrix already bounds the settled patches."""

    def reset(self, rows: slice, idx: Tensor, norms: Tensor, sq: Tensor, best: Tensor) -> None:
        """Take the full scoring of patches ``idx`` of ``rows``.

        ``norms`` are their ``|x|^2``, ``sq`` (len(idx), K) their float32 squared distances,
        ``best`` their new best filters.
        """
        slack = distance_slack(norms[:, None], self._mean_norms)
        fresh = (sq - slack).clamp_min_(0.0).sqrt_()
        fresh.scatter_(1, best[:, None], math.inf)
        self.lower[rows][idx, : self.k] = fresh

    def follow(
        self, kept: Tensor, delta: Tensor, reach: Tensor, *, best: Tensor, old_sigmas: Tensor,
        sigmas: Tensor,
    ) -> None:  # fmt: skip
        """Move the bounds to the new bank: kept filters first, then ``reach`` (M, new).

        ``delta`` are the kept filters' moves, ``reach`` lower bounds on every patch's distance
        to the new filters. The sigmas play no part: the matrix holds distances, not scores.
        """
        n_kept = int(kept.sum())
        if n_kept < self.k:
            self.lower[:, :n_kept] = self.lower[:, : self.k][:, kept]
        self.lower[:, :n_kept].sub_(delta.float()).clamp_min_(0.0)
        self.k = n_kept + reach.shape[1]
        self.lower[:, n_kept : self.k] = reach
        self.fresh = torch.arange(n_kept, self.k)


class PatchBounds:
    """One upper bound a patch on its scores under every filter but its best."""

    def __init__(self, n_patches: int, n_filters: int, capacity: int, scorer: Scorer) -> None:
        self.scorer = scorer
        self.others = torch.full((n_patches,), math.inf, dtype=torch.float64)
        self.fresh = torch.arange(0)  # new filters are bounded by ``reach`` alone

    def start(self, means: Tensor, sigmas: Tensor) -> None:
        """Take this sweep's bank (float32)."""
        self._mean_norms = means.square().sum(-1)
        self._neg_inv_two_d_var, self._peak = self.scorer.terms(sigmas)

    def rival(self, rows: slice, best: Tensor, norms: Tensor, fresh_sq: Tensor | None) -> Tensor:
        """Upper bound (m,) on the other scores of ``rows`` under the bank of this sweep."""
        return self.others[rows]

    def settle(self, rows: slice, settled: Tensor, rival: Tensor) -> None:
        """Nothing to do: the settled patches keep their bound."""

    def reset(self, rows: slice, idx: Tensor, norms: Tensor, sq: Tensor, best: Tensor) -> None:
        """Take the full scoring of patches ``idx`` of ``rows``.

        ``norms`` are their ``|x|^2``, ``sq`` (len(idx), K) their float32 squared distances,
        ``best`` their new best filters.
        """
        if sq.shape[1] < 2:
            self.others[rows][idx] = -math.inf
            return
        scores = (sq - distance_slack(norms[:, None], self._mean_norms)).clamp_min_(0.0)
        scores.mul_(self._neg_inv_two_d_var).add_(self._peak).scatter_(1, best[:, None], -math.inf)
        self.others[rows][idx] = scores.amax(-1).double() * self.scorer.scale

    def follow(
        self, kept: Tensor, delta: Tensor, reach: Tensor, *, best: Tensor, old_sigmas: Tensor,
        sigmas: Tensor,
    ) -> None:  # fmt: skip
        """Move the bounds to the new bank: kept filters first, then ``reach`` (M, new).

        ``best`` is every patch's best filter, numbered in the new bank (-1: none); ``delta``
        and ``old_sigmas`` the kept filters' moves and sigmas before, ``sigmas`` the whole new
        bank's; ``reach`` lower bounds on every patch's distance to the new filters.
        """
        n_kept = delta.numel()
        finite = self.others[self.others.isfinite()]
        if finite.numel() and n_kept:
            self.others = self._moved(finite, best, delta, old_sigmas, sigmas[:n_kept])
        if reach.shape[1]:
            new = self.scorer.score(reach.square(), sigmas[n_kept:]).amax(-1)
            self.others = torch.maximum(self.others, new)

    def _moved(
        self, finite: Tensor, best: Tensor, delta: Tensor, old_sigmas: Tensor, sigmas: Tensor
    ) -> Tensor:
        """Return the bound under the kept filters, tabulated over the bounds' values."""
        # Any grid is valid; quantiles of a strided sample of the bounds keep it cheap.
        ordered = finite[:: max(1, finite.numel() // (16 * GRID_POINTS))].sort().values
        grid = ordered[torch.linspace(0, ordered.numel() - 1, GRID_POINTS).round().long()]
        grid = torch.unique(torch.cat([grid, finite.max()[None]]))  # sorted, up to the largest
        r = self.scorer.least_distance(grid[:, None], old_sigmas[None, :])
        bound = self.scorer.score((r - delta).clamp_min(0.0).square(), sigmas[None, :])
        top2 = bound.topk(min(2, delta.numel()), dim=-1)
        at = torch.searchsorted(grid, self.others).clamp_max(grid.numel() - 1)
        own = top2.indices[at, 0] == best  # the best filter's bound does not count
        second = (
            top2.values[at, 1]
            if delta.numel() > 1
            else self.others.new_full(self.others.shape, -math.inf)
        )
        moved = torch.where(own, second, top2.values[at, 0])
        beyond = self.others > grid[-1]  # above every grid point: nothing tabulated
        nothing = self.others == -math.inf  # no other filter was there
        return torch.where(beyond, math.inf, torch.where(nothing, -math.inf, moved))

"""The E-step of an NSN layer's hard-EM fit, which skips the patches whose filter cannot change.

Every iteration of :meth:`~dcgmm.baselines.nsn_layer.NSNLayer.fit` gives each patch its best
filter. By brute force that is one (patches x D) x (D x K) product an iteration, although late in
a fit, when the filters move little, almost every patch keeps its filter. As in the accelerated
k-means of Elkan (ICML 2003) and Hamerly (SDM 2010), adapted here to filters that each have
their own sigma, every patch keeps its best filter at its last full scoring, an upper bound on
its distance to that filter's mean (``dist``: the triangle inequality adds the mean's moves) and
an upper bound on its scores under the other filters (:mod:`dcgmm.baselines.nsn_bounds`). A
patch whose lower bound on its best score beats the other filters and tau keeps its filter
without a product; the others get their exact distance to their filter, then, if still
undecided, the full product. A new filter starts from Elkan's filter-to-filter bound (its
distance to the patch's best filter, less ``dist``); per-filter bounds then score it exactly,
a product with a few columns.

Measured speed: ``docs/speed_versions_nsn.md``.

The bounds hold in real arithmetic, with an allowance for the float32 rounding of the products.
The full scoring is float32, as in the brute-force E-step, so two filters whose float32 scores
differ by less than rounding may be ranked either way by either method. The sufficient
statistics are kept incrementally: only patches whose assignment changed move from one filter's
sums to another's (float64; counts are exact).
"""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dcgmm.baselines.nsn_bounds import (
    DIFFERENCE_RTOL,
    Bounds,
    FilterBounds,
    PatchBounds,
    Scorer,
    distance_slack,
    margin_of,
)
from dcgmm.baselines.nsn_patches import PatchBatches

if TYPE_CHECKING:
    from dcgmm.baselines.nsn_layer import NSNLayer

__all__ = ["EStep", "Sweep"]

# Per-filter bounds (FilterBounds) for patches at least this long and when the matrix fits.
# Below it a patch's full scoring (2 D K flops) costs little more than updating its K bounds:
# MNIST's first layer (D = 16, 2,000 digits, 1 thread) fitted in 37.1 s with per-filter bounds
# and 20.6 / 22.3 s with per-patch ones (the same filters).
FILTER_BOUNDS_MIN_DIM = 64
FILTER_BOUNDS_MAX_BYTES = 1 << 30


@dataclass
class Sweep:
    """What one E-step over all patches found: sums by filter and the unexplained patches."""

    count: Tensor
    sum_x: Tensor
    sum_sq: Tensor
    unexplained: list[Tensor]
    unexplained_scores: list[Tensor]
    unexplained_norms: list[Tensor]  # their |x|^2, as the batches had them
    changed: int
    decided_by_bounds: int  # patches settled without scoring them under every filter
    means_before: Tensor


class EStep:
    """The E-step of one layer's fit, carried across iterations (bounds and running sums).

    ``layer`` is the :class:`~dcgmm.baselines.nsn_layer.NSNLayer` being fitted: its bank is
    read at every :meth:`sweep`; after the M-step changes it, :meth:`follow` carries the bounds
    and sums over. With ``prune=False`` (and always for the ``"rbf"`` similarity) every patch
    is scored under every filter, every sweep.
    """

    def __init__(
        self,
        layer: "NSNLayer",
        batches: PatchBatches,
        tau: float,
        *,
        max_filters: int,
        prune: bool = True,
    ) -> None:
        self.layer, self.batches, self.tau = layer, batches, tau
        self.prune = prune and layer.similarity != "rbf"
        self.scorer = Scorer(batches.d, layer.similarity == "logpdf_per_dim")
        n, k, d = batches.n_patches, layer.n_filters, batches.d
        fits = n * max_filters * 4 <= FILTER_BOUNDS_MAX_BYTES
        per_filter = self.prune and d >= FILTER_BOUNDS_MIN_DIM and fits
        kind = FilterBounds if per_filter else PatchBounds
        self.bounds: Bounds = kind(n, k, max_filters, self.scorer)
        self.assignment = torch.full((n,), -2, dtype=torch.long)  # -1 unexplained, -2 never
        self.best = torch.full((n,), -1, dtype=torch.long)  # -1: unknown
        self.dist = torch.zeros(n, dtype=torch.float64)  # upper bound on |x - mu_best|
        self.count = torch.zeros(k, dtype=torch.float64)
        self.sum_x = torch.zeros(k, d, dtype=torch.float64)
        self.sum_sq = torch.zeros(k, dtype=torch.float64)
        self._swept: tuple[Tensor, Tensor] | None = None  # the bank of the last sweep, float64

    # ------------------------------------------------------------------------------ sweep
    def sweep(self) -> Sweep:
        """Give every patch its best filter under the layer's bank (or none, below tau)."""
        layer = self.layer
        self._swept = (layer.means.double(), layer.sigmas.double())
        if self.prune:
            self.bounds.start(layer.means, layer.sigmas)
        out = Sweep(self.count, self.sum_x, self.sum_sq, [], [], [], 0, 0, layer.means.clone())
        for first_row, patches, norms, norms64 in self.batches:
            rows = slice(first_row, first_row + patches.shape[0])
            score, decided = self._best_filters(rows, patches, norms)
            explained = score >= self.tau
            assigned = torch.where(explained, self.best[rows], -1)
            self._move_statistics(rows, assigned, patches, norms64)
            out.changed += int((self.assignment[rows] != assigned).sum())
            out.decided_by_bounds += decided
            self.assignment[rows] = assigned
            if not bool(explained.all()):
                out.unexplained.append(patches[~explained])
                out.unexplained_scores.append(score[~explained].to(norms.dtype))
                out.unexplained_norms.append(norms[~explained])
        return out

    def _best_filters(self, rows: slice, patches: Tensor, norms: Tensor) -> tuple[Tensor, int]:
        """Update best and dist of one batch; return its best scores and how many bounds settled."""
        best, dist = self.best[rows], self.dist[rows]
        known = best >= 0 if self.prune else torch.zeros_like(best, dtype=torch.bool)
        score = torch.full(best.shape, -math.inf, dtype=torch.float64)
        if not bool(known.any()):
            self._score_fully(rows, known.logical_not(), patches, norms, score)
            return score, 0
        fresh = self.bounds.fresh
        fresh_sq = self.layer.squared_distances(patches, norms, fresh) if fresh.numel() else None
        rival = self.bounds.rival(rows, best, norms, fresh_sq)
        assert self._swept is not None, "a sweep sets the bank first"
        sigmas = self._swept[1]
        b = best.clamp_min(0)
        lower = self.scorer.score(dist.square(), sigmas[b])
        settled = known & self._beats(lower, rival)
        score[settled] = lower[settled]
        # Not settled: the exact distance to the best filter may settle it.
        check = (known & ~settled).nonzero().squeeze(1)
        gap = patches[check] - self.layer.means[best[check]]
        near = torch.linalg.vector_norm(gap, dim=-1).double() * (1 + DIFFERENCE_RTOL)
        exact_best = self.scorer.score(near.square(), sigmas[best[check]])
        ok = exact_best >= rival[check] + margin_of(exact_best)
        dist[check] = near
        score[check[ok]] = exact_best[ok]
        settled[check[ok]] = True
        self.bounds.settle(rows, settled, rival)
        self._score_fully(rows, ~settled, patches, norms, score)
        return score, int(settled.sum())

    def _beats(self, lower: Tensor, rival: Tensor) -> Tensor:
        """Where a lower bound on the best score beats the others and tau, with a margin."""
        margin = margin_of(lower)
        return (lower >= rival + margin) & (lower >= self.tau + margin)

    def _score_fully(
        self, rows: slice, todo: Tensor, patches: Tensor, norms: Tensor, score: Tensor
    ) -> None:
        """Score the ``todo`` patches of a batch under every filter (the brute-force E-step)."""
        idx = todo.nonzero().squeeze(1)
        if not idx.numel():
            return
        x, x_norms = patches[idx], norms[idx]
        sq = self.layer.squared_distances(x, x_norms)
        top, which = self.layer.scores_of_distances(sq.clone()).max(-1)
        if self.prune:
            self.bounds.reset(rows, idx, x_norms, sq, which)
        own = sq.gather(1, which[:, None])[:, 0]
        own_slack = distance_slack(x_norms, self.layer.means.square().sum(-1)[which])
        self.best[rows][idx] = which
        self.dist[rows][idx] = (own + own_slack).double().sqrt()
        score[idx] = top.double()

    def _move_statistics(
        self, rows: slice, assigned: Tensor, patches: Tensor, norms64: Tensor
    ) -> None:
        """Move the patches whose assignment changed from one filter's sums to another's."""
        before = self.assignment[rows]
        moved = (before != assigned).nonzero().squeeze(1)
        if not moved.numel():
            return
        x, sq = patches[moved].double(), norms64[moved]
        for target, sign in ((before[moved], -1.0), (assigned[moved], 1.0)):
            keep = target >= 0
            self.count.index_add_(0, target[keep], torch.full_like(sq[keep], sign))
            self.sum_x.index_add_(0, target[keep], x[keep], alpha=sign)
            self.sum_sq.index_add_(0, target[keep], sq[keep], alpha=sign)

    # ----------------------------------------------------------------------------- follow
    def follow(self, kept: Tensor) -> None:
        """Carry bounds and sums over to the layer's new bank.

        ``kept`` (K_old,) marks the filters of the swept bank the M-step kept, in order, as the
        first rows of the new bank; the rows after them are new filters.
        """
        assert self._swept is not None, "follow() comes after a sweep"
        old_means, old_sigmas = self._swept
        means, sigmas = self.layer.means.double(), self.layer.sigmas.double()
        n_kept = int(kept.sum())
        n_new = self.layer.n_filters - n_kept
        remap = torch.full((kept.numel() + 1,), -1, dtype=torch.long)  # index -1 stays -1
        remap[:-1][kept] = torch.arange(n_kept)
        self.assignment = torch.where(self.assignment >= 0, remap[self.assignment], self.assignment)
        self.best = remap[self.best]
        self.count = torch.cat([self.count[kept], self.count.new_zeros(n_new)])
        self.sum_x = torch.cat([self.sum_x[kept], self.sum_x.new_zeros(n_new, self.batches.d)])
        self.sum_sq = torch.cat([self.sum_sq[kept], self.sum_sq.new_zeros(n_new)])
        delta = (means[:n_kept] - old_means[kept]).norm(dim=-1)
        self.dist = self.dist + torch.cat([delta, delta.new_zeros(1)])[self.best]  # -1: no move
        if self.prune:
            self.bounds.follow(
                kept, delta, self._reach(means, n_kept), best=self.best,
                old_sigmas=old_sigmas[kept], sigmas=sigmas,
            )  # fmt: skip

    def _reach(self, means: Tensor, n_kept: int) -> Tensor:
        """Lower bounds (M, new) on every patch's distance to the new filters, no product.

        |x - mu_new| >= |mu_best - mu_new| - |x - mu_best| (Elkan's filter-to-filter bound); new
        filters are seeded on unexplained patches, usually far from every patch's best.
        """
        gaps = torch.cdist(
            means[:n_kept], means[n_kept:], compute_mode="donot_use_mm_for_euclid_dist"
        )
        gaps = torch.cat([gaps, gaps.new_zeros(1, gaps.shape[1])])  # best -1: nothing known
        return (gaps[self.best] - self.dist[:, None]).clamp_min_(0.0)

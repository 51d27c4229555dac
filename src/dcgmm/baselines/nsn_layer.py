"""One layer of the Normal Similarity Network: a filter bank fitted by hard EM with growth.

The score of a patch under a filter and the layer's hard-EM fit: the E-step with its bounds is
:class:`~dcgmm.baselines.nsn_estep.EStep`, the M-step with growth
:meth:`NSNLayer._refit_and_grow`. The reconstruction choices are listed in
:mod:`dcgmm.baselines.nsn`.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from dcgmm.baselines.nsn_bounds import HALF_LOG_2PI
from dcgmm.baselines.nsn_estep import EStep, Sweep
from dcgmm.baselines.nsn_patches import PatchBatches
from dcgmm.layers.folding import Folding

__all__ = ["HALF_LOG_2PI", "GenSettings", "LayerFit", "NSNLayer", "Similarity"]

Similarity = Literal["logpdf_per_dim", "logpdf", "rbf"]


@dataclass(frozen=True)
class GenSettings:
    """NSN-Gen's knobs (spec section 5), shared by all layers; the paper's values are lost.

    ``beta`` sharpens ``softmax(beta * phi)``; ``n_draws`` multinomial draws per position (0:
    infinitely many, i.e. ``w = p``); ``alpha`` scales the filter means (contrast), ``gamma``
    the filter noise (pixel randomness).
    """

    beta: float = 10.0
    n_draws: int = 10
    alpha: float = 1.0
    gamma: float = 1.0


@dataclass
class LayerFit:
    """What fitting one layer recorded."""

    n_filters: list[int] = field(default_factory=list)  # after every iteration
    n_unexplained: list[int] = field(default_factory=list)
    changed_fraction: list[float] = field(default_factory=list)
    # patches whose filter the E-step's bounds settled without scoring them under every filter
    decided_fraction: list[float] = field(default_factory=list)
    converged: bool = False
    out_of_time: bool = False  # stopped by the time budget


@dataclass(frozen=True)
class _Growth:
    """How a layer's fit grows its bank: the threshold, the cap and the seeding knobs."""

    tau: float
    max_filters: int
    per_iteration: int
    sigma_cap: float
    generator: torch.Generator | None


class NSNLayer(nn.Module):
    """One layer of Gaussian filters over ``window x window`` patches with a stride.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the maps it reads.
    window, stride : int
    similarity : str
        See the module docstring.
    sigma_min : float
        Floor of every filter's sigma (data units).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        window: int,
        stride: int,
        *,
        similarity: Similarity = "logpdf_per_dim",
        sigma_min: float = 1e-3,
    ) -> None:
        super().__init__()
        if similarity not in ("logpdf_per_dim", "logpdf", "rbf"):
            raise ValueError(f"unknown similarity {similarity!r}")
        self.folding = Folding(input_shape, (window, window), (stride, stride))
        self.input_shape = input_shape
        self.window, self.stride = window, stride
        self.similarity, self.sigma_min = similarity, sigma_min
        d = self.folding.out_shape[2]
        self.register_buffer("means", torch.zeros(0, d))
        self.register_buffer("sigmas", torch.ones(0))
        self.register_buffer("counts", torch.zeros(0))

    means: Tensor
    sigmas: Tensor
    counts: Tensor

    @property
    def n_filters(self) -> int:
        """K, the number of filters found so far."""
        return int(self.means.shape[0])

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(H_out, W_out, K)``."""
        h, w, _ = self.folding.out_shape
        return (h, w, self.n_filters)

    def set_filters(self, means: Tensor, sigmas: Tensor, counts: Tensor) -> None:
        """Replace the filter bank (K changes: the buffers are re-registered)."""
        self.means = means.to(self.means.dtype).contiguous()
        self.sigmas = sigmas.to(self.sigmas.dtype).contiguous()
        self.counts = counts.to(self.counts.dtype).contiguous()

    def squared_distances(
        self, patches: Tensor, norms: Tensor | None = None, columns: Tensor | None = None
    ) -> Tensor:
        """Return ``|x - mu_k|^2`` (..., K) as ``|x|^2 - 2 x.mu + |mu|^2`` (one matrix product).

        ``norms`` are the patches' ``|x|^2`` (...) where the caller has them; ``columns``
        restricts to those filters.
        """
        means = self.means if columns is None else self.means[columns]
        norms = patches.square().sum(-1) if norms is None else norms
        sq = patches @ means.T
        return sq.mul_(-2).add_(norms[..., None]).add_(means.square().sum(-1)).clamp_min_(0.0)

    def patch_scores(self, patches: Tensor) -> Tensor:
        """Return scores (..., K) of patches (..., D) under every filter."""
        return self.scores_of_distances(self.squared_distances(patches))

    def forward(self, x: Tensor) -> Tensor:
        """Return the similarity map ``sigmoid(score)`` (N, H_out, W_out, K)."""
        return torch.sigmoid(self.patch_scores(self.folding(x)))

    def scores(self, patches: Tensor, norms: Tensor, columns: Tensor | None = None) -> Tensor:
        """Return the scores (M, K) of patches (M, D) given ``|x|^2`` (M,) (of ``columns`` only)."""
        return self.scores_of_distances(self.squared_distances(patches, norms, columns), columns)

    def scores_of_distances(self, sq: Tensor, columns: Tensor | None = None) -> Tensor:
        """Turn squared distances (..., K) (of ``columns``) into scores, in place."""
        sigmas = self.sigmas if columns is None else self.sigmas[columns]
        if self.similarity == "rbf":
            return sq.div_(-2 * sigmas.square()).exp_()
        d = self.means.shape[1]
        sq.div_(2 * d * sigmas.square()).neg_()
        sq.sub_(torch.log(sigmas)).sub_(HALF_LOG_2PI)
        if self.similarity == "logpdf":
            sq.mul_(d)
        return sq

    def best_filters(self, patches: Tensor, norms: Tensor) -> tuple[Tensor, Tensor]:
        """Return the best score and filter of every patch (M, D), given ``|x|^2`` (M,)."""
        return self.scores(patches, norms).max(-1)

    def max_component_log_likelihood(self, x: Tensor) -> Tensor:
        """Return ``max_k log pi_k N(x_ij; mu_k, sigma_k^2 I)`` per position (N, H_out, W_out).

        A library extension (spec section 10) that puts NSN in the outlier harness; pi are the
        filters' last assignment counts. A score, not a calibrated density.
        """
        patches = self.folding(x)
        d = patches.shape[-1]
        sq = self.squared_distances(patches)
        log_n = -sq / (2 * self.sigmas.square()) - d * (torch.log(self.sigmas) + HALF_LOG_2PI)
        log_pi = torch.log(self.counts / self.counts.sum())
        return (log_n + log_pi).amax(-1)

    # ------------------------------------------------------------------------------ training
    @torch.no_grad()
    def fit(
        self,
        inputs: Tensor,
        *,
        tau: float,
        max_filters: int = 512,
        max_iters: int = 300,
        tol: float = 1e-3,
        new_filters_per_iter: int = 1,
        batch_size: int = 256,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int, int], None] | None = None,
        deadline: float | None = None,
        prune: bool = True,
    ) -> LayerFit:
        """Grow and fit the filter bank on the patches of ``inputs`` (N, H, W, C) by hard EM.

        Goes over batches of images (:class:`PatchBatches`: the patches stay in memory when
        they fit, else they are cut again every iteration); sufficient statistics in float64.
        Stops when no patch is left unexplained
        and fewer than ``tol`` of the assignments changed, after ``max_iters``, or after the
        first iteration that ends past ``deadline`` (a ``time.perf_counter()`` value); never
        exceeds ``max_filters``. ``prune=False`` scores every patch under every filter at
        every iteration instead of skipping those the bounds of :class:`EStep` settle (the
        ``"rbf"`` similarity always does).
        """
        d = self.folding.out_shape[2]
        batches = PatchBatches(self.folding, inputs, batch_size)
        first = self.folding(inputs[:batch_size]).reshape(-1, d).double()
        spread = first.var(0).mean().sqrt().clamp_min(self.sigma_min)
        pick = int(torch.randint(first.shape[0], (1,), generator=generator))
        self.set_filters(first[pick : pick + 1], spread[None], torch.ones(1))
        estep = EStep(self, batches, tau, max_filters=max_filters, prune=prune)
        record = LayerFit()
        growth = _Growth(tau, max_filters, new_filters_per_iter, self._sigma_cap(tau), generator)
        for iteration in range(max_iters):
            sweep = estep.sweep()
            n_unexplained, room, kept = self._refit_and_grow(sweep, growth)
            estep.follow(kept)
            changed = sweep.changed / batches.n_patches
            record.decided_fraction.append(sweep.decided_by_bounds / batches.n_patches)
            record.n_filters.append(self.n_filters)
            record.n_unexplained.append(n_unexplained)
            record.changed_fraction.append(changed)
            if progress is not None:
                progress(iteration, self.n_filters, n_unexplained)
            if n_unexplained == 0 and changed < tol:
                record.converged = True
                break
            if n_unexplained and room <= 0 and changed < tol:
                break  # at the cap: more iterations cannot add what tau asks for
            if deadline is not None and time.perf_counter() >= deadline:
                record.out_of_time = True
                break
        return record

    def _refit_and_grow(self, sweep: Sweep, growth: "_Growth") -> tuple[int, int, Tensor]:
        """M-step: refit the used filters, seed new ones on what is still unexplained.

        Returns the number of patches the sweep left unexplained, the room for new filters the
        refit left (``max_filters`` minus the filters still used), and which filters of the
        swept bank the new one keeps (its first rows, in order; new filters follow them).
        """
        d = self.means.shape[1]
        alive = sweep.count > 0
        means = sweep.sum_x[alive] / sweep.count[alive, None]
        var = (sweep.sum_sq[alive] / sweep.count[alive] - means.square().sum(-1)) / d
        sigmas = var.clamp_min(0).sqrt().clamp_min(self.sigma_min)
        counts = sweep.count[alive]
        n_unexplained = sum(u.shape[0] for u in sweep.unexplained)
        room = growth.max_filters - means.shape[0]
        if n_unexplained and room > 0:
            # Seed only on patches the refitted filters still leave below tau: a patch
            # left out while the sigmas were still settling is no reason for a new filter.
            self.set_filters(means, sigmas, counts)
            pool = torch.cat(sweep.unexplained)
            if means.shape[0]:  # best_filters is patch_scores' max, bit for bit, without |x|^2
                rescored = self.best_filters(pool, torch.cat(sweep.unexplained_norms))[0]
                pool, pool_scores = pool[rescored < growth.tau], rescored[rescored < growth.tau]
            else:
                pool_scores = torch.cat(sweep.unexplained_scores)
            if pool.shape[0]:
                new_means, new_sigmas, new_counts = self._new_filters(
                    pool.double(), pool_scores, min(growth.per_iteration, room),
                    growth.sigma_cap, growth.generator,
                )  # fmt: skip
                means = torch.cat([means, new_means])
                sigmas = torch.cat([sigmas, new_sigmas])
                counts = torch.cat([counts, new_counts])
        if means.shape[0] == 0:  # nothing explained and no room: keep the old bank
            means, sigmas, counts = sweep.means_before.double(), self.sigmas.double(), self.counts
            alive = torch.ones_like(alive)
        self.set_filters(means, sigmas, counts)
        return n_unexplained, room, alive

    def _sigma_cap(self, tau: float) -> float:
        # Largest sigma at which a patch sitting on the mean still scores tau.
        if self.similarity == "rbf":
            return math.inf
        per_dim_tau = (
            tau if self.similarity == "logpdf_per_dim" else tau / self.folding.out_shape[2]
        )
        return math.exp(-per_dim_tau - HALF_LOG_2PI)

    def _new_filters(
        self,
        pool: Tensor,
        pool_scores: Tensor,
        m: int,
        sigma_cap: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Seed ``m`` new filters on unexplained patches (farthest-point after the worst one).

        Each new filter sits on a real patch: the first on the patch explained worst, the next
        ones farthest from the seeds so far. Its sigma is the pool's spread, capped at
        ``sigma_cap * e^-1/2`` so that patches within one sigma of it clear ``tau``. (Fitting
        one filter to the mean of all unexplained patches, the literal reading of the paper,
        stalls: that mean is a blur no patch is close to, see the module docstring.)
        """
        d = pool.shape[1]
        seeds = [pool[int(pool_scores.argmin())]]
        if m > 1:
            sample = pool[torch.randperm(pool.shape[0], generator=generator)[:4096]]
            nearest = (sample - seeds[0]).square().sum(-1)
            for _ in range(m - 1):
                far = int(nearest.argmax())
                if float(nearest[far]) == 0.0:
                    break
                seeds.append(sample[far])
                nearest = torch.minimum(nearest, (sample - seeds[-1]).square().sum(-1))
        means = torch.stack(seeds)
        spread = float((pool - pool.mean(0)).square().sum(-1).mean().div(d).sqrt())
        sigma = min(max(spread, self.sigma_min), sigma_cap * math.exp(-0.5))
        sigmas = torch.full((means.shape[0],), sigma, dtype=torch.float64)
        return means, sigmas, torch.ones(means.shape[0], dtype=torch.float64)

    # ---------------------------------------------------------------------------- generation
    def generate(
        self,
        phi: Tensor,
        settings: GenSettings = GenSettings(),
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Rebuild this layer's input map from a score map ``phi`` (N, h, w, K) (NSN-Gen step).

        The output has the size the map covers: ``((h - 1) s + f, (w - 1) s + f, C)``, so
        partial maps (intermediate-layer sampling) work as well as full ones.
        """
        n, h, w, k = phi.shape
        if k != self.n_filters:
            raise ValueError(f"phi has {k} channels; this layer has {self.n_filters} filters")
        beta, n_draws, alpha, gamma = (
            settings.beta,
            settings.n_draws,
            settings.alpha,
            settings.gamma,
        )
        p = torch.softmax(beta * phi.reshape(-1, k).double(), dim=-1)
        if n_draws > 0:
            draws = torch.multinomial(p, n_draws, replacement=True, generator=generator)
            weights = torch.zeros_like(p).scatter_add_(
                1, draws, torch.ones(draws.shape, dtype=p.dtype)
            )
            weights /= n_draws
        else:  # n_draws = 0 stands for infinitely many draws: w = p
            weights = p
        mean_part = weights @ self.means.double()
        noise_scale = (weights.square() @ self.sigmas.double().square()).sqrt()[:, None]
        eps = torch.randn(mean_part.shape, generator=generator, dtype=torch.float64)
        patches = (alpha * mean_part + gamma * noise_scale * eps).reshape(n, h, w, -1)
        c = self.input_shape[2]
        f, s = self.window, self.stride
        folding = Folding(((h - 1) * s + f, (w - 1) * s + f, c), (f, f), (s, s))
        return folding.sample(patches.to(phi.dtype))

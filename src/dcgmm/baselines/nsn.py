"""Normal Similarity Network (Nandy, Hsu & Lee 2018) and its generator NSN-Gen.

Specification: ``../shared/specs/nsn.md``. The paper's formulas were lost; every formula here
is the spec's **reconstruction**, and each choice is a named option:

* score of patch ``x`` under filter ``k`` (``similarity``): ``"logpdf_per_dim"`` (default)
  ``(1/D) log N(x; mu_k, sigma_k^2 I)``; ``"logpdf"`` without the 1/D; ``"rbf"``
  ``exp(-|x - mu_k|^2 / (2 sigma_k^2))``. The layer outputs ``sigmoid(score)`` for every filter.
* training: hard EM per layer with growth. A patch whose best score is below the threshold
  ``tau`` joins no filter; after each M-step new filters (``new_filters_per_iter``, default
  1) are added for those patches. **Our deviation**: the literal reading, one new filter
  fitted to the mean of all unexplained patches, stalls (measured: on 2000 MNIST digits the
  first layer stayed at 1-3 filters for 400 iterations at every tau we tried), because that
  mean is a blur no patch is close to. A new filter is therefore seeded on a real patch (the
  worst explained one, then farthest-point seeds), with sigma capped so that patches within
  one sigma of it clear ``tau``; the M-step then refits it. Empty filters are dropped.
* generation (NSN-Gen): at every position ``w = Multinomial(n_draws, softmax(beta * phi)) /
  n_draws`` and ``patch = sum_k w_k (alpha mu_k + gamma sigma_k eps_k)``; overlapping patches are
  averaged (our :class:`~dcgmm.layers.Folding`'s backward mode). The noise is drawn in
  distribution-equal form ``gamma sqrt(sum_k w_k^2 sigma_k^2) eps``, one ``eps ~ N(0, I_D)``
  per position.

Images are NHWC in [0, 1], as everywhere in dcgmm. Patches are cut by our folding layer.
"""

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from dcgmm._allocator import retain_freed_memory
from dcgmm.layers.folding import Folding, windows_along

Similarity = Literal["logpdf_per_dim", "logpdf", "rbf"]
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# The paper's architectures (spec section 6): (window, stride) per layer, and the filter
# counts it found (MNIST, Fashion-MNIST; LFW for the 64x64 one).
ARCHITECTURES: dict[str, tuple[tuple[int, int], ...]] = {
    "28x28": ((4, 2), (3, 2), (6, 2)),
    "64x64": ((4, 2), (3, 2), (3, 2), (3, 2), (3, 1)),
}
PAPER_FILTER_COUNTS = {
    "mnist": (96, 130, 131),
    "fashion-mnist": (140, 238, 256),
    "lfw": (284, 242, 240, 235, 161),
}


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
    converged: bool = False
    out_of_time: bool = False  # stopped by the time budget


@dataclass
class _Sweep:
    """What one E-step over all patches found: sums by filter and the unexplained patches."""

    count: Tensor
    sum_x: Tensor
    sum_sq: Tensor
    unexplained: list[Tensor]
    unexplained_scores: list[Tensor]
    changed: int
    means_before: Tensor


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

    def squared_distances(self, patches: Tensor) -> Tensor:
        """Return ``|x - mu_k|^2`` (..., K) as ``|x|^2 - 2 x.mu + |mu|^2`` (one matrix product)."""
        return (
            patches.square().sum(-1, keepdim=True)
            - 2 * patches @ self.means.T
            + self.means.square().sum(-1)
        ).clamp_min(0.0)

    def patch_scores(self, patches: Tensor) -> Tensor:
        """Return scores (..., K) of patches (..., D) under every filter."""
        d = patches.shape[-1]
        sq = self.squared_distances(patches)
        if self.similarity == "rbf":
            return torch.exp(-sq / (2 * self.sigmas.square()))
        logpdf_per_dim = (
            -sq / (2 * d * self.sigmas.square()) - torch.log(self.sigmas) - HALF_LOG_2PI
        )
        return logpdf_per_dim * d if self.similarity == "logpdf" else logpdf_per_dim

    def forward(self, x: Tensor) -> Tensor:
        """Return the similarity map ``sigmoid(score)`` (N, H_out, W_out, K)."""
        return torch.sigmoid(self.patch_scores(self.folding(x)))

    def best_filters(self, patches: Tensor, norms: Tensor) -> tuple[Tensor, Tensor]:
        """Return the best score and filter of every patch (M, D), given ``|x|^2`` (M,).

        Bit for bit ``patch_scores(patches).max(-1)``: the same operations in the same order,
        on one (M, K) buffer edited in place instead of a new tensor per term.
        """
        if self.similarity == "rbf":
            return self.patch_scores(patches).max(-1)
        d = patches.shape[-1]
        scores = patches @ self.means.T
        scores.mul_(-2).add_(norms[:, None]).add_(self.means.square().sum(-1)).clamp_min_(0.0)
        scores.div_(2 * d * self.sigmas.square()).neg_()
        scores.sub_(torch.log(self.sigmas)).sub_(HALF_LOG_2PI)
        if self.similarity == "logpdf":
            scores.mul_(d)
        return scores.max(-1)

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
    ) -> LayerFit:
        """Grow and fit the filter bank on the patches of ``inputs`` (N, H, W, C) by hard EM.

        Goes over batches of images (:class:`PatchBatches`: the patches stay in memory when
        they fit, else they are cut again every iteration); sufficient statistics in float64.
        Stops when no patch is left unexplained
        and fewer than ``tol`` of the assignments changed, after ``max_iters``, or after the
        first iteration that ends past ``deadline`` (a ``time.perf_counter()`` value); never
        exceeds ``max_filters``.
        """
        n_images = inputs.shape[0]
        n_pos = self.folding.out_shape[0] * self.folding.out_shape[1]
        d = self.folding.out_shape[2]
        batches = PatchBatches(self.folding, inputs, batch_size)
        first = self.folding(inputs[:batch_size]).reshape(-1, d).double()
        spread = first.var(0).mean().sqrt().clamp_min(self.sigma_min)
        pick = int(torch.randint(first.shape[0], (1,), generator=generator))
        self.set_filters(first[pick : pick + 1], spread[None], torch.ones(1))
        assignment = torch.full((n_images * n_pos,), -2, dtype=torch.long)
        record = LayerFit()
        growth = _Growth(tau, max_filters, new_filters_per_iter, self._sigma_cap(tau), generator)
        for iteration in range(max_iters):
            sweep = self._assign(batches, tau, assignment)
            n_unexplained, room = self._refit_and_grow(sweep, growth)
            changed = sweep.changed / assignment.numel()
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

    def _assign(self, batches: "PatchBatches", tau: float, assignment: Tensor) -> "_Sweep":
        """E-step: give every patch its best filter (or none, below ``tau``); sum by filter.

        ``assignment`` (one entry per patch) is updated in place; the sweep counts changes.
        """
        k, d = self.n_filters, self.means.shape[1]
        sweep = _Sweep(
            torch.zeros(k, dtype=torch.float64),
            torch.zeros(k, d, dtype=torch.float64),
            torch.zeros(k, dtype=torch.float64),
            [], [], 0, self.means.clone(),
        )  # fmt: skip
        for first_row, patches, norms, norms64 in batches:
            best_score, best = self.best_filters(patches, norms)
            # Unexplained patches (below tau) go to a spare row k, dropped afterwards.
            row = torch.where(best_score < tau, k, best)
            slot = slice(first_row, first_row + patches.shape[0])
            assigned = torch.where(row == k, -1, row)
            sweep.changed += int((assignment[slot] != assigned).sum())
            assignment[slot] = assigned
            sweep.count += torch.bincount(row, minlength=k + 1)[:k].double()
            sweep.sum_x += sweep.sum_x.new_zeros(k + 1, d).index_add_(0, row, patches.double())[:k]
            sweep.sum_sq += sweep.sum_sq.new_zeros(k + 1).index_add_(0, row, norms64)[:k]
            left = row == k
            if bool(left.any()):
                sweep.unexplained.append(patches[left])
                sweep.unexplained_scores.append(best_score[left])
        return sweep

    def _refit_and_grow(self, sweep: "_Sweep", growth: "_Growth") -> tuple[int, int]:
        """M-step: refit the used filters, seed new ones on what is still unexplained.

        Returns the number of patches the sweep left unexplained and the room for new
        filters the refit left (``max_filters`` minus the filters still used).
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
            if means.shape[0]:
                rescored = self.patch_scores(pool).amax(-1)
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
        self.set_filters(means, sigmas, counts)
        return n_unexplained, room

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


class NSN(nn.Module):
    """A stack of :class:`NSNLayer` fitted greedily, bottom first.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the images.
    architecture : sequence of (window, stride), or a name in :data:`ARCHITECTURES`
        The last window must cover its whole input (one top vector per image).
    similarity, sigma_min
        Passed to every layer.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        architecture: str | Sequence[tuple[int, int]] = "28x28",
        *,
        similarity: Similarity = "logpdf_per_dim",
        sigma_min: float = 1e-3,
    ) -> None:
        super().__init__()
        arch = ARCHITECTURES[architecture] if isinstance(architecture, str) else architecture
        self.input_shape = input_shape
        self.architecture = tuple(tuple(a) for a in arch)
        self.similarity, self.sigma_min = similarity, sigma_min
        h, w, _ = input_shape
        for i, (f, s) in enumerate(self.architecture):
            if f > min(h, w):
                raise ValueError(f"layer {i + 1}: window {f} does not fit the {h}x{w} map")
            h, w = windows_along(h, f, s), windows_along(w, f, s)
        if (h, w) != (1, 1):
            raise ValueError(
                f"the last layer must cover its whole input (a 1x1 top map); this architecture "
                f"ends at {h}x{w}"
            )
        self.layers = nn.ModuleList()

    def load_filters(self, state: dict[str, Tensor]) -> None:
        """Rebuild the fitted layers from a :meth:`state_dict` (K_l comes from the tensors)."""
        self.layers = nn.ModuleList()
        shape = self.input_shape
        for i, (f, s) in enumerate(self.architecture):
            layer = NSNLayer(shape, f, s, similarity=self.similarity, sigma_min=self.sigma_min)
            layer.set_filters(
                state[f"layers.{i}.means"], state[f"layers.{i}.sigmas"], state[f"layers.{i}.counts"]
            )
            self.layers.append(layer)
            shape = layer.out_shape

    @property
    def nsn_layers(self) -> list[NSNLayer]:
        """The fitted layers, bottom first."""
        return [layer for layer in self.layers if isinstance(layer, NSNLayer)]

    def filter_counts(self) -> list[int]:
        """Return K_l of every fitted layer, bottom first."""
        return [layer.n_filters for layer in self.nsn_layers]

    def _next_input_shape(self) -> tuple[int, int, int]:
        if not self.nsn_layers:
            return self.input_shape
        return self.nsn_layers[-1].out_shape

    @torch.no_grad()
    def fit(
        self,
        images: Tensor,
        *,
        taus: Sequence[float],
        max_filters: int | Sequence[int] = 512,
        max_iters: int = 300,
        new_filters_per_iter: int = 1,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int, int, int], None] | None = None,
        max_seconds: float | None = None,
    ) -> list[LayerFit]:
        """Fit every layer in turn on the maps of the one below (greedy, layer-wise).

        ``max_seconds`` bounds the whole fit: each layer gets an equal share of the time left
        when it starts, and stops after the iteration that uses it up (keeping its filters).
        """
        if len(taus) != len(self.architecture):
            raise ValueError(f"need one tau per layer ({len(self.architecture)}); got {len(taus)}")
        retain_freed_memory()  # every iteration allocates (M, K) scores: see dcgmm._allocator
        caps = [max_filters] * len(taus) if isinstance(max_filters, int) else list(max_filters)
        self.layers = nn.ModuleList()
        maps, records = images, []
        end = None if max_seconds is None else time.perf_counter() + max_seconds
        for i, (f, s) in enumerate(self.architecture):
            layer = NSNLayer(
                self._next_input_shape(), f, s, similarity=self.similarity, sigma_min=self.sigma_min
            )
            layers_left = len(self.architecture) - i
            now = time.perf_counter()
            deadline = None if end is None else now + max(end - now, 0.0) / layers_left
            record = layer.fit(
                maps,
                tau=taus[i],
                max_filters=caps[i],
                max_iters=max_iters,
                new_filters_per_iter=new_filters_per_iter,
                generator=generator,
                progress=_layer_progress(progress, i),
                deadline=deadline,
            )
            self.layers.append(layer)
            records.append(record)
            maps = torch.cat([layer(maps[j : j + 256]) for j in range(0, maps.shape[0], 256)])
        return records

    def forward(self, x: Tensor) -> Tensor:
        """Return the top score vectors F^(L) as (N, K_L) (the kNN embedding)."""
        for layer in self.nsn_layers:
            x = layer(x)
        return x.reshape(x.shape[0], -1)

    def embed(self, x: Tensor) -> Tensor:
        """Return the top score vector of every image (N, K_L)."""
        return self(x)

    def maps(self, x: Tensor) -> list[Tensor]:
        """Return F^(1), ..., F^(L) of ``x``."""
        out = []
        for layer in self.nsn_layers:
            x = layer(x)
            out.append(x)
        return out

    # ---------------------------------------------------------------------------- generation
    def decode(
        self,
        phi: Tensor,
        from_layer: int,
        settings: GenSettings = GenSettings(),
        *,
        to_layer: int = 0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run NSN-Gen from the output map ``phi`` of layer ``from_layer`` (1-based).

        It stops at the output map of layer ``to_layer`` (default 0: the pixels).
        """
        x = phi
        for layer in reversed(self.nsn_layers[to_layer:from_layer]):
            x = layer.generate(x, settings, generator=generator)
        return x

    def sample(
        self,
        n: int,
        *,
        from_layer: int | None = None,
        z: Tensor | None = None,
        settings: GenSettings = GenSettings(),
        generator: torch.Generator | None = None,
        clip: bool = True,
    ) -> Tensor:
        """Draw images (N, H, W, C) from top noise ``z ~ N(0, I)`` (or a given ``z``).

        With ``from_layer`` below the top, ``z`` is a 1x1 map of that layer and the result is
        one patch of its receptive field (intermediate-layer sampling). Pixels are clipped to
        [0, 1] unless ``clip=False`` (a model of whitened images samples whitened values).
        """
        level = len(self.nsn_layers) if from_layer is None else from_layer
        k = self.nsn_layers[level - 1].n_filters
        if z is None:
            z = torch.randn(n, k, generator=generator)
        phi = z.reshape(-1, 1, 1, k).float()
        drawn = self.decode(phi, level, settings, generator=generator)
        return drawn.clamp(0, 1) if clip else drawn

    def inpaint(
        self,
        x: Tensor,
        missing: Tensor,
        settings: GenSettings = GenSettings(gamma=0.0),
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Occlusion filling (spec section 8): rebuild F^(1) where it saw hidden pixels.

        Forward the image (hidden pixels set to 0), run NSN-Gen from the top map F^(L) down to
        a rebuilt first-layer map, put its entries where the first layer's windows touch hidden
        pixels, decode that map to pixels, and paste the known pixels back.
        """
        if missing.shape != x.shape:
            raise ValueError(
                f"missing must have shape {tuple(x.shape)}; got {tuple(missing.shape)}"
            )
        observed = torch.where(missing, torch.zeros_like(x), x)
        maps = self.maps(observed)
        # NSN-Gen from the top map down to a rebuilt first-layer map (the input of layer 2).
        rebuilt_f1 = self.decode(maps[-1], len(maps), settings, to_layer=1, generator=generator)
        first = self.nsn_layers[0]
        touched = first.folding(missing.float()).amax(-1, keepdim=True) > 0
        f1 = torch.where(touched, rebuilt_f1, maps[0])
        pixels = first.generate(f1, settings, generator=generator).clamp(0, 1)
        return torch.where(missing, pixels, x)


# Patches kept in memory across hard-EM iterations when they take at most this many floats
# (1 GiB); bigger layers cut them again every iteration, batch by batch.
PATCH_CACHE_FLOATS = 1 << 28


class PatchBatches:
    """The patches of a layer's inputs, batch by batch, with their squared norms.

    Yields ``(first row, patches (M, D), |patch|^2 (M,), |patch|^2 in float64 (M,))`` per
    batch of ``batch_size`` images, the rows numbered over all images. Patches are cut once
    and kept when all of them take at most :data:`PATCH_CACHE_FLOATS` floats; the norms (a
    float or two a patch) always are.
    """

    def __init__(self, folding: Folding, inputs: Tensor, batch_size: int) -> None:
        self.folding, self.inputs, self.batch_size = folding, inputs, batch_size
        h, w, d = folding.out_shape
        self.n_pos, self.d = h * w, d
        self.keep = inputs.shape[0] * h * w * d <= PATCH_CACHE_FLOATS
        self._patches: list[Tensor] = []
        self._norms: list[tuple[Tensor, Tensor]] = []

    def _cut(self, start: int) -> Tensor:
        return self.folding(self.inputs[start : start + self.batch_size]).reshape(-1, self.d)

    def __iter__(self) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
        for i, start in enumerate(range(0, self.inputs.shape[0], self.batch_size)):
            if i < len(self._patches):
                patches = self._patches[i]
            else:
                patches = self._cut(start)
                if self.keep:
                    self._patches.append(patches)
            if i == len(self._norms):  # as patch_scores and the float64 statistics had them
                self._norms.append((patches.square().sum(-1), patches.double().square().sum(-1)))
            yield start * self.n_pos, patches, *self._norms[i]


def _layer_progress(
    progress: Callable[[int, int, int, int], None] | None, layer: int
) -> Callable[[int, int, int], None] | None:
    """Bind the layer number of a model-level progress callback."""
    if progress is None:
        return None
    report = progress

    def callback(iteration: int, n_filters: int, n_unexplained: int) -> None:
        report(layer, iteration, n_filters, n_unexplained)

    return callback

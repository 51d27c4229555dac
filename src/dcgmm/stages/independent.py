r"""An independent GMM layer (one mixture per position) and the folding below it, as one stage.

Every position :math:`l` has its own filters :math:`W_l = [-\tfrac12 P_l, \mu_l P_l]` (K, 2D),
so the log-joints of all positions are one grouped matrix product,

.. math::
    \ell_{l,:,n} = W_l \begin{bmatrix} x_{ln}^2 \\ x_{ln} \end{bmatrix} + b_l .

The windows are cut once, squared beside themselves, into a channel-major, batch-last layout
(L, 2D, N). In that layout the product is, on the CPU, one oneDNN grouped 1x1 convolution
(the positions are the groups, the batch is the width), which runs the recipes' preset E
second layer 2-3x faster than MKL's batched products of the (L, N, 2D) layout did
(``python -m benchmarks.bench_independent``, ``docs/speed_independent.md``); elsewhere (GPUs,
float64) it is one batched product. The statistics :math:`R_l^\top [x^2, x]` are one MKL
batched product reading the windows as they lie (both: :mod:`dcgmm.stages.grouped_products`).
Segment sums by winner (the hard objectives' gradient rows are kernel rows) were slower
here: torch's CPU scatter along the batch axis serialises on the repeated winners (26 ms
against 13 ms for the product, preset E's second layer, one thread), and compiled they still
took 33 against 14 ms (2026-12-07: per position only the batch's windows are summed, and each
addition lands apart from the last); a shared layer's sums pay
(:mod:`dcgmm.stages.window_sums`).

The windows are 4 (D / C) times the input and the biggest tensor of a step (46 MB for preset
E's second layer at batch 100), so they are cut a chunk of output rows at a time into one
reused buffer of about :data:`WINDOW_CHUNK_BYTES`, and each chunk is multiplied and, in
training, turned into its statistics while it is still in the cache (every position's
mixture is its own, so nothing but the mean objective crosses chunks). The windows are then
written to memory once, not written and read back twice, and the peak memory no longer grows
with the batch's windows: scoring 1,000 images with ``E-indep`` peaked at 689 instead of 1,194
MB (one process each, 2026-12-07). The speed gain depends on the neighbours and the threads:
with chunks of one row, alone on this project's 2-core machine, the second layer's training
pass was 0.97-1.12x as fast as with all rows at once (three runs of ``python -m
benchmarks.bench_independent``), beside another one-thread job (how the reproduction harness
runs) the whole ``E-indep`` training step 1.07-1.08x; with two rows (8 MiB) at 2 threads,
34.3 / 32.1 ms = 1.07x (2026-12-07).

A training pass computes batch last, (L, K, N) per chunk. Where an independent layer lies
under another (``E-indep``'s two lower layers), it hands its responsibilities over as a
(N, H, W, K) view of an (H, W, K, N) tensor: the layer above cuts its windows from them
without transposing its whole input (3 ms of that step, one thread). The filters, bias and
gradients of the per-position parameters come from :mod:`dcgmm.stages.position_parameters`.
"""

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from dcgmm.layers import GMM, Folding, GMMScores
from dcgmm.layers import gmm_gradients as grads
from dcgmm.layers.batch_last import softmax_over_components
from dcgmm.stages import position_parameters
from dcgmm.stages.gmm import GMMStage
from dcgmm.stages.grouped_products import (
    grouped_products,
    grouped_products_batch_last,
    grouped_statistics,
)

__all__ = ["WINDOW_CHUNK_BYTES", "IndependentGMMStage", "chunk_rows"]

# About the windows cut at a time: a few MB stay in the last-level cache (32 MB here) between
# the products that read them. One output row of preset E's second layer is 3.8 MB (12
# positions, 800 values, batch 100). Beside another job, chunks of one and two rows ran
# equally fast, all 12 rows at once 15-18% slower (the stage's training pass, one thread);
# alone, the whole E-indep step took 52.4 / 53.4 / 55.0 ms at 1 thread and 32.1 / 34.3 /
# 31.5 ms at 2 threads with chunks of 8 / 4 / 12 MiB, 34.3 with all rows at once (medians of
# 8 interleaved rounds, 2026-12-07): more rows per product keep 2 threads busier.
WINDOW_CHUNK_BYTES = 8 * 2**20


def chunk_rows(rows: int, row_bytes: int) -> int:
    """Return how many output rows, of ``row_bytes`` of windows each, one chunk cuts.

    About :data:`WINDOW_CHUNK_BYTES` of windows, at least one row, at most ``rows``.
    """
    return max(1, min(rows, WINDOW_CHUNK_BYTES // row_bytes))


class IndependentGMMStage(GMMStage):
    """An independent GMM layer with the folding below it, if any (see the module docstring)."""

    def __init__(self, folding: Folding | None, gmm: GMM, index: int) -> None:
        if not gmm.independent:
            raise ValueError("IndependentGMMStage runs an independent GMM layer")
        super().__init__(gmm, index)
        self.folding = folding
        # Set by :func:`dcgmm.stages.build_stages` where the next stage is also independent:
        # a training pass then returns its responsibilities as a (N, H, W, K) view of an
        # (H, W, K, N) tensor, which the next stage's windows are cut from without a
        # transposition (3 ms of preset E-indep's step, one thread).
        self.hands_over_batch_last = False

    def _windows(self) -> tuple[tuple[int, int], tuple[int, int]]:
        folding = self.folding  # without one, the windows are single positions
        return ((1, 1), (1, 1)) if folding is None else (folding.patch_size, folding.stride)

    def _maps(self, h: Tensor) -> tuple[Tensor]:
        """Return the input batch last, (H, W, C, N), as the one map to cut windows from.

        The (N, H, W, C) input is made batch-last once (unless it came so, from an
        independent stage's hand-over), so that the copies that cut the windows move runs of
        N contiguous values.
        """
        return (h.permute(1, 2, 3, 0).contiguous(),)  # no copy after a hand-over

    def _features(self, h: Tensor) -> Tensor:
        """Return ``[x^2, x]`` of every position's window, batch last: shape (L, 2D, N)."""
        return self._cut(self._maps(h), 0, self.layer.input_shape[0], with_squares=True)

    def _cut(
        self,
        maps: Sequence[Tensor],
        first: int,
        stop: int,
        out: Tensor | None = None,
        *,
        with_squares: bool = False,
    ) -> Tensor:
        """Cut the windows of output rows ``first:stop`` of M batch-last maps (H, W, C, N).

        Returns (L, S * D, N) with L the rows' positions and S = M slots of windows, written
        into the start of the flat buffer ``out`` if given. ``with_squares`` adds a first
        slot, S = M + 1: the squares of the first map's windows, squared after the cut while
        they are in the cache (E-indep's training step 1.0 ms faster at 2 threads than
        cutting them from a squared map, which is written to memory and read back 4 times
        where windows overlap; same-process A/B, 11 rounds, 2026-12-07).
        """
        (fy, fx), (sy, sx) = self._windows()
        ho = min(stop, self.layer.input_shape[0]) - first
        wo = self.layer.input_shape[1]
        c, n = maps[0].shape[2:]
        slots = len(maps) + with_squares
        shape = (ho, wo, slots, fy, fx, c, n)
        size = math.prod(shape)
        features = maps[0].new_empty(shape) if out is None else out[:size].view(shape)
        for index, one_map in enumerate(maps, start=int(with_squares)):
            windows = one_map.unfold(0, fy, sy).unfold(1, fx, sx)  # (Ho, Wo, C, N, fy, fx)
            # into the folding's (dy, dx, c) order
            features[:, :, index].copy_(windows[first:stop].permute(0, 1, 4, 5, 2, 3))
        if with_squares:
            torch.mul(features[:, :, 1], features[:, :, 1], out=features[:, :, 0])
        return features.view(ho * wo, slots * fy * fx * c, n)

    def _chunks(
        self, maps: Sequence[Tensor], *, with_squares: bool = False
    ) -> Iterator[tuple[slice, Tensor]]:
        """Yield (positions, their windows (L_chunk, S * D, N)) for chunks of output rows.

        The windows as :meth:`_cut` gives them (``with_squares`` as there).

        Each chunk's windows are about :data:`WINDOW_CHUNK_BYTES` (at least one row) and
        overwrite the previous chunk's: use them before asking for the next. Off the CPU all
        rows are one chunk: a GPU has no such cache to keep them in, and each chunk's kernel
        launches would cost more than they save.
        """
        ho, wo, dim = self.layer.input_shape
        first_map = maps[0]
        slots = len(maps) + with_squares
        per_row = wo * slots * dim * first_map.shape[-1]  # values of one row's windows
        rows = chunk_rows(ho, per_row * first_map.element_size())
        if first_map.device.type != "cpu":
            rows = ho
        buffer = first_map.new_empty(rows * per_row)
        for first in range(0, ho, rows):
            stop = min(ho, first + rows)
            windows = self._cut(maps, first, stop, out=buffer, with_squares=with_squares)
            yield slice(first * wo, stop * wo), windows

    def _weight_and_bias(self) -> tuple[Tensor, Tensor]:
        """Return ``W = [-P/2, mu P]`` as (L, K, 2D) and the bias (L, K)."""
        gmm = self.layer
        ho, wo, k, dim = gmm.means.shape
        weight, bias = position_parameters.filters(
            gmm.means.detach(), gmm.sqrt_precisions.detach(), gmm.logits.detach()
        )
        return weight.view(ho * wo, k, 2 * dim), bias.reshape(ho * wo, k)

    def _log_joint(
        self, maps: Sequence[Tensor], weight: Tensor, bias: Tensor, *, with_squares: bool
    ) -> Tensor:
        """Return the log-joints (N, Ho, Wo, K), contiguous, of the windows of ``maps``.

        ``weight`` (L, K, S * D) and ``bias`` (L, K) weigh the S slots of windows
        (:meth:`_cut`).
        """
        ho, wo, _ = self.layer.input_shape
        n, k = maps[0].shape[-1], weight.shape[1]
        out = maps[0].new_empty(n, ho * wo, k)
        for positions, windows in self._chunks(maps, with_squares=with_squares):
            grouped_products(weight[positions], bias[positions], windows, out=out[:, positions])
        return out.view(n, ho, wo, k)

    def log_joint_observed(self, h: Tensor, observed: Tensor) -> Tensor:
        r"""Return the log-joints (N, Ho, Wo, K) with the unobserved entries marginalised.

        As :meth:`dcgmm.stages.folded.FoldedGMMStage.log_joint_observed`: one grouped product
        of the windows of :math:`[o h^2, o h, o]` (``h`` 0 where the mask :math:`o` is) with
        :math:`[-\tfrac12 P_l, \mu_l P_l, \log s_l - \tfrac12 \mu_l^2 P_l
        - \tfrac12 \log 2\pi]`, plus :math:`\log \pi_l`.
        """
        with torch.no_grad():
            gmm = self.layer
            ho, wo, k, dim = gmm.means.shape
            _, height, width, c = h.shape
            # Batch last once: the products below then read runs of N contiguous values
            # (on transposed views they took 8 of E-indep's 58 ms of in-painting, 2 threads).
            h_last = h.permute(1, 2, 3, 0).contiguous()
            maps = h.new_empty(3, height, width, c, h.shape[0])  # [o h^2, o h, o], batch last
            maps[2].copy_(observed.permute(1, 2, 3, 0))
            torch.mul(maps[2], h_last, out=maps[1])
            torch.mul(maps[1], h_last, out=maps[0])
            weight, bias = self._observed_filters()
            return self._log_joint(
                maps.unbind(0),
                weight.view(ho * wo, k, 3 * dim),
                bias.reshape(ho * wo, k),
                with_squares=False,
            )

    def log_joint(self, h: Tensor) -> Tensor:
        """Return the GMM layer's log-joints (N, Ho, Wo, K) for the stage's input ``h``."""
        with torch.no_grad():
            return self._log_joint(self._maps(h), *self._weight_and_bias(), with_squares=True)

    def forward(self, h: Tensor) -> Tensor:
        """Return the responsibilities (the GMM layer's output)."""
        return torch.softmax(self.log_joint(h), dim=-1)

    def scores(self, h: Tensor) -> tuple[Tensor, GMMScores]:
        """Return the responsibilities and the GMM layer's density scores (one pass)."""
        log_joint = self.log_joint(h)
        return self.layer.responsibilities_and_scores(log_joint)

    def objective_and_statistics(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, the batch's sufficient statistics)."""
        resp, value, stats = self._pass(h)
        return resp, value, grads.Statistics(*(t.contiguous() for t in stats))

    def train_step(self, h: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (responsibilities, mean objective) and set the GMM parameters' grads.

        The gradients come from :func:`dcgmm.stages.position_parameters.descent_gradients`
        (fused on the CPU for big layers), reading the statistics as they lie.
        """
        resp, value, stats = self._pass(h)
        gmm = self.layer
        params = (gmm.means, gmm.sqrt_precisions, gmm.logits)
        means, sqrt_prec, logits = (p.detach() for p in params)
        descent = position_parameters.descent_gradients(means, sqrt_prec, logits, stats)
        for param, grad in zip(params, descent, strict=True):
            param.grad = grad
        return resp, value

    def _pass(self, h: Tensor) -> tuple[Tensor, Tensor, grads.Statistics]:
        """Return (responsibilities, mean objective, statistics as strided views).

        Chunk by chunk of positions (:meth:`_chunks`): the log-joints, responsibilities and
        objective gradient of the chunk, then its statistics from the same windows, all of
        it batch last, (L, K, N): the reductions over K then run along rows of N contiguous
        values (:mod:`dcgmm.layers.batch_last`), and the statistics' product reads R as it
        lies. Until 2026-12-07 a layer of narrow windows that hands over batch first (the
        recipes' D and G first layers) computed batch first instead: same-process A/B, 9
        rounds, batch first -> batch last, G-indep 29.62 -> 28.32 ms per step at 2 threads
        and 45.68 -> 44.81 at 1, D-indep 30.37 -> 29.83 and 50.09 -> 49.50.
        """
        with torch.no_grad():
            gmm = self.layer
            ho, wo, k, dim = gmm.means.shape
            n = h.shape[0]
            weight, bias = self._weight_and_bias()
            kernel = gmm.annealing_kernel(h.dtype, h.device)
            resp_chunks = []  # (L_chunk, K, N) each
            weight_sums = h.new_empty(ho * wo, k)  # r per position: a sum over the batch
            per_component = h.new_empty(ho * wo, k, 2 * dim)  # [B, A] = R^T [x^2, x]
            total = h.new_zeros(())
            for positions, windows in self._chunks(self._maps(h), with_squares=True):
                log_joint = grouped_products_batch_last(weight[positions], bias[positions], windows)
                chunk_resp = softmax_over_components(log_joint)
                resp_chunks.append(chunk_resp)
                objective = grads.objective_gradient(
                    log_joint, gmm.objective, kernel, chunk_resp, rows=n * ho * wo,
                    components_dim=-2,
                )  # fmt: skip
                torch.sum(objective.d_log_joint, 2, out=weight_sums[positions])
                grouped_statistics(objective.d_log_joint, windows, out=per_component[positions])
                total += objective.values.sum()
            both = per_component.view(ho, wo, k, 2 * dim)
            stats = grads.Statistics(
                weight_sums.view(ho, wo, k), both[..., dim:], both[..., :dim]
            )  # r, A = R^T x, B = R^T x^2
            return self._joined(resp_chunks), total / (n * ho * wo), stats

    def _joined(self, chunks: list[Tensor]) -> Tensor:
        """Return the chunks' responsibilities (L_chunk, K, N) as the stage's output (N, Ho, Wo, K).

        Handed over batch last as computed (one chunk: its softmax itself); else batch first,
        contiguous, each chunk transposed into place: one copy, where joining the chunks and
        then transposing them took two (C-indep's first layer, 3 chunks of (147, 49, 100):
        2.87 -> 1.26 ms at 2 threads, 5.49 -> 2.89 at 1; scratch microbenchmark).
        """
        ho, wo, k, _ = self.layer.means.shape
        n = chunks[0].shape[-1]
        if self.hands_over_batch_last:  # (L_chunk, K, N) each
            resp = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
            return resp.view(ho, wo, k, n).permute(3, 0, 1, 2)
        out = chunks[0].new_empty(n, ho * wo, k)
        first = 0
        for chunk in chunks:
            out[:, first : first + chunk.shape[0]].copy_(chunk.permute(2, 0, 1))
            first += chunk.shape[0]
        return out.view(n, ho, wo, k)

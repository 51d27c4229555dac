"""A Poon-Domingos einsum network with Binomial leaves, trained by online EM.

Table II's PD-SPN came from EinsumNetworks (Peharz et al., ICML 2020). SPFlow 1.1 has no
Poon-Domingos builder, so the network is written here, after the EinsumNetworks paper and the
structure its MNIST demo builds (no code of theirs is copied):

- **Region graph** (Poon and Domingos, UAI 2011): the root region is the whole H x W image. A
  region is cut, along either axis, at every global cut point strictly inside it; each cut is a
  partition into two child regions, and a child met twice is one shared region. The cut points
  of an axis of length s are ``ceil(i * delta)`` for ``i = 1 .. floor((s - 1) / delta)``.
  EinsumNetworks' demo uses ``pd_num_pieces = [4]``, that is delta = 28 / 4 = 7 on both axes:
  cuts at 7, 14 and 21, so 16 leaf regions of 7 x 7 pixels and 100 regions in all.
- **Leaves**: each leaf region holds K factorised Binomial(255, p) distributions over its
  pixels, one p per pixel and k. p is kept in [1e-6, 1 - 1e-6] (EinsumNetworks' clamp; the
  Binomial's counterpart of a variance floor).
- **Sums**: every inner region holds K sums (the root one), each a mixture over all K x K
  products of every one of its partitions. EinsumNetworks mix per partition and then over the
  partitions; a mixture of mixtures is one mixture, so this is the same family.
- **Training**: EinsumNetworks' online EM. The expected counts of a batch come from autograd:
  ``w * d(sum log p)/dw`` for sum weights (floored at 1e-16, as EinsumNetworks do),
  ``d(sum log p)/d(log leaf)`` for leaf responsibilities. The batch's M-step result is blended
  in with step size s: ``theta <- (1 - s) theta + s theta_batch``.

Index legend: N batch, R regions of a layer, P partitions of a region, K sums per region,
C = P * K * K products a sum mixes, L leaf regions, D pixels.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PROB_CLAMP = 1e-6  # EinsumNetworks' Binomial clamp of p
# EinsumNetworks floor a batch's expected counts of a sum weight at 1e-16 before normalising,
# so no weight decays to 0 under online EM. Without it, unused weights shrank by about (1 - s)
# per step (to 1e-27 after 1,000 MNIST batches) and the second epoch's mean log p was nan.
COUNT_FLOOR = 1e-16
Rect = tuple[int, int, int, int]  # (top, left, bottom, right), bottom and right exclusive


@dataclass(frozen=True)
class RegionGraph:
    """The regions (rectangles) of a PD structure and each one's partitions.

    ``regions`` is ordered by layer: leaves first, the root last. ``partitions[i]`` lists the
    (first, second) child indices of region i (empty for a leaf); ``layers`` the index ranges
    of the layers, each region's children lying in earlier layers.
    """

    regions: tuple[Rect, ...]
    partitions: tuple[tuple[tuple[int, int], ...], ...]
    layers: tuple[range, ...]


def cut_points(size: int, delta: float) -> list[int]:
    """Return EinsumNetworks' cut points of one axis: ceil(i * delta), i = 1 .. (size-1)//delta."""
    return [math.ceil(i * delta) for i in range(1, math.floor((size - 1) / delta) + 1)]


def _children(rect: Rect, rows: list[int], cols: list[int]) -> list[tuple[Rect, Rect]]:
    top, left, bottom, right = rect
    cuts = [((top, left, c, right), (c, left, bottom, right)) for c in rows if top < c < bottom]
    return cuts + [
        ((top, left, bottom, c), (top, c, bottom, right)) for c in cols if left < c < right
    ]


def region_graph(height: int, width: int, delta: tuple[float, float]) -> RegionGraph:
    """Build the Poon-Domingos region graph of an image with cut step ``delta`` = (rows, cols).

    Raises
    ------
    ValueError
        If a delta is below 1 (EinsumNetworks' bound).
    """
    if min(delta) < 1:
        raise ValueError(f"delta must be >= 1 on both axes; got {delta}.")
    rows, cols = cut_points(height, delta[0]), cut_points(width, delta[1])
    splits: dict[Rect, list[tuple[Rect, Rect]]] = {}
    queue = [(0, 0, height, width)]
    while queue:  # breadth first from the root; a region met again is shared, not copied
        rect = queue.pop(0)
        if rect in splits:
            continue
        splits[rect] = _children(rect, rows, cols)
        queue += [child for pair in splits[rect] for child in pair]
    level: dict[Rect, int] = {}
    for rect in sorted(splits, key=lambda r: (r[2] - r[0]) * (r[3] - r[1])):  # children first
        level[rect] = 1 + max((level[c] for pair in splits[rect] for c in pair), default=-1)
    order = sorted(splits, key=lambda r: (level[r], r))
    index = {rect: i for i, rect in enumerate(order)}
    n_levels = 1 + max(level.values())
    starts = [sum(1 for r in order if level[r] < lv) for lv in range(n_levels + 1)]
    return RegionGraph(
        regions=tuple(order),
        partitions=tuple(tuple((index[a], index[b]) for a, b in splits[r]) for r in order),
        layers=tuple(range(starts[lv], starts[lv + 1]) for lv in range(n_levels)),
    )


def _sum_layer_indices(graph: RegionGraph, layer: range) -> tuple[Tensor, Tensor, Tensor]:
    """Return (first, second, valid), each (R, P_max): child indices padded with 0, and a mask."""
    n_parts = max(len(graph.partitions[r]) for r in layer)
    first = torch.zeros(len(layer), n_parts, dtype=torch.long)
    second = torch.zeros_like(first)
    valid = torch.zeros(len(layer), n_parts, dtype=torch.bool)
    for i, r in enumerate(layer):
        for j, (a, b) in enumerate(graph.partitions[r]):
            first[i, j], second[i, j], valid[i, j] = a, b, True
    return first, second, valid


def binomial_log_pmf(x: Tensor, probs: Tensor, trials: int) -> Tensor:
    """Return log Binomial(x | trials, p) per pixel and component.

    Parameters
    ----------
    x : Tensor, shape (N, D)
        Counts in 0..trials.
    probs : Tensor, shape (D, K)
        Success probabilities.

    Returns
    -------
    Tensor, shape (N, D, K)
    """
    log_choose = math.lgamma(trials + 1) - torch.lgamma(x + 1) - torch.lgamma(trials - x + 1)
    x = x[:, :, None]
    return log_choose[:, :, None] + x * probs.log() + (trials - x) * torch.log1p(-probs)


class PDSPN(nn.Module):
    """A Poon-Domingos einsum network over (N, H * W) pixel counts with Binomial leaves.

    Parameters
    ----------
    height, width : int
        The image's size; pixels are flattened row by row.
    delta : tuple of float
        The cut step along rows and columns (EinsumNetworks' MNIST demo: (7, 7)).
    n_sums : int
        K: sums per inner region and Binomials per leaf region and pixel.
    trials : int
        The Binomial's N (255 for 8-bit pixels).
    generator : torch.Generator, optional
        Draws the initial parameters: p and the weights uniform in [0.01, 0.99] (weights then
        normalised), as EinsumNetworks start.
    """

    def __init__(
        self,
        height: int,
        width: int,
        delta: tuple[float, float],
        *,
        n_sums: int = 10,
        trials: int = 255,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.graph = region_graph(height, width, delta)
        if len(self.graph.layers) < 2:
            raise ValueError(
                f"delta {delta} makes no cut in a {height} x {width} image, so there is no sum "
                "layer; use a smaller delta."
            )
        self.trials, self.n_sums = trials, n_sums
        leaves = [self.graph.regions[r] for r in self.graph.layers[0]]
        owner = torch.full((height, width), -1, dtype=torch.long)
        for i, (top, left, bottom, right) in enumerate(leaves):
            owner[top:bottom, left:right] = i
        assert (owner >= 0).all(), "the leaf regions must tile the image"
        self.register_buffer("leaf_of_pixel", owner.reshape(-1))  # (D,)
        uniform = torch.rand(height * width, n_sums, generator=generator)
        self.probs = nn.Parameter(0.01 + 0.98 * uniform)  # (D, K)
        self.weights = nn.ParameterList()
        for depth, layer in enumerate(self.graph.layers[1:], start=1):
            first, second, valid = _sum_layer_indices(self.graph, layer)
            self.register_buffer(f"first{depth}", first)
            self.register_buffer(f"second{depth}", second)
            self.register_buffer(f"valid{depth}", valid)
            k_out = 1 if depth == len(self.graph.layers) - 1 else n_sums
            mask = valid[:, None, :, None].expand(-1, k_out, -1, n_sums * n_sums)
            w = (0.01 + 0.98 * torch.rand(mask.shape, generator=generator)) * mask
            w = w.reshape(len(layer), k_out, -1)  # (R, K_out, C)
            self.weights.append(nn.Parameter(w / w.sum(-1, keepdim=True)))

    def leaf_log_prob(self, x: Tensor) -> Tensor:
        """Return each leaf region's K log densities, shape (N, L, K), for counts x (N, D)."""
        per_pixel = binomial_log_pmf(x, self.probs.clamp(PROB_CLAMP, 1 - PROB_CLAMP), self.trials)
        n_leaves = len(self.graph.layers[0])
        out = x.new_zeros(x.shape[0], n_leaves, self.n_sums)
        return out.index_add(1, self.leaf_of_pixel, per_pixel)  # type: ignore[arg-type]

    def _sum_layer(self, below: Tensor, depth: int) -> Tensor:
        """Return the log values (N, R, K_out) of one inner layer from all regions below."""
        first, second = getattr(self, f"first{depth}"), getattr(self, f"second{depth}")
        valid = getattr(self, f"valid{depth}")
        a, b = below[:, first], below[:, second]  # (N, R, P, K) each
        a_max, b_max = a.amax(-1, keepdim=True), b.amax(-1, keepdim=True)
        scale = (a_max + b_max).masked_fill(~valid[None, :, :, None], -math.inf)  # (N, R, P, 1)
        top = scale.amax(2, keepdim=True)  # (N, R, 1, 1): one scale per region and sample
        # EinsumNetworks' log-einsum-exp: the K x K products in linear space, relative to their
        # maxima (and each partition to the region's largest), so the sum is one batched
        # matmul; the log and the scales are added back after it. The weights' floor
        # (COUNT_FLOOR) keeps ``mixed`` > 0: the largest product is 1 times a weight > 0.
        products = (a - a_max).exp()[..., :, None] * (b - b_max).exp()[..., None, :]
        products = products * (scale - top).exp()[..., None]  # (N, R, P, K, K)
        flat = products.reshape(*products.shape[:2], -1)  # (N, R, C)
        mixed = torch.einsum("nrc,rkc->nrk", flat, self.weights[depth - 1])
        return mixed.log() + top[:, :, 0]  # (N, R, K_out)

    def _product_mask(self, depth: int) -> Tensor:
        """Return which products of a layer's regions exist, (R, 1, C), padding excluded."""
        valid = getattr(self, f"valid{depth}")  # (R, P)
        return valid[:, None, :, None].expand(-1, 1, -1, self.n_sums**2).reshape(len(valid), 1, -1)

    def log_prob_and_leaves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return log p(x) (N,) and the leaf log densities (N, L, K) it was computed from."""
        leaves = self.leaf_log_prob(x)
        below = leaves
        for depth in range(1, len(self.graph.layers)):
            out = self._sum_layer(below, depth)
            below = torch.cat([below, out], dim=1) if depth < len(self.graph.layers) - 1 else out
        return below[:, 0, 0], leaves

    def log_prob(self, x: Tensor) -> Tensor:
        """Return log p(x) per image, shape (N,), for pixel counts x of shape (N, D)."""
        return self.log_prob_and_leaves(x)[0]

    def em_step(self, x: Tensor, stepsize: float) -> float:
        """Run one online-EM step on the batch x (N, D); return its mean -log p(x) before it."""
        with torch.enable_grad():
            log_p, leaves = self.log_prob_and_leaves(x)
            grads = torch.autograd.grad(log_p.sum(), [leaves, *self.weights])
        with torch.no_grad():
            resp = grads[0][:, self.leaf_of_pixel]  # (N, D, K): posterior of each leaf Binomial
            mass = resp.sum(0)  # (D, K)
            batch_probs = torch.einsum("ndk,nd->dk", resp, x) / (self.trials * mass).clamp_min(
                torch.finfo(x.dtype).tiny
            )
            new = torch.where(mass > 0, batch_probs, self.probs)
            self.probs.copy_(((1 - stepsize) * self.probs + stepsize * new).clamp(0, 1))
            for depth, (w, grad) in enumerate(zip(self.weights, grads[1:], strict=True), 1):
                used = self._product_mask(depth)  # (R, 1, C): False on padded partitions
                counts = (w * grad).clamp_min(COUNT_FLOOR) * used  # (R, K_out, C)
                batch_w = counts / counts.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
                blended = (1 - stepsize) * w + stepsize * batch_w
                w.copy_(blended / blended.sum(-1, keepdim=True))
        return float(-log_p.detach().mean())

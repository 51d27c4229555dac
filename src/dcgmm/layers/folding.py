"""Folding: cut windows out of a feature map and stack each window into the channel axis.

Folding is the "half-convolution" of a DCGMM: a following GMM layer applied to the folded map
is a convolution whose filters are Gaussian densities.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from dcgmm._numerics import full_float32_convolutions
from dcgmm.layers.base import Layer, Shape

__all__ = ["Folding", "windows_along"]


def windows_along(size: int, patch: int, stride: int) -> int:
    """Return how many windows of ``patch`` with ``stride`` fit in ``size`` (no padding)."""
    return (size - patch) // stride + 1


class Folding(Layer):
    r"""Cut ``fy x fx`` windows with stride ``(sy, sx)`` and stack them into channels.

    Output channel ``(dy * fx + dx) * C + c`` holds input channel ``c`` at window offset
    ``(dy, dx)``: the patch is row-major with the channel fastest (spec §1).

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the input.
    patch_size : tuple of int
        ``(fy, fx)``.
    stride : tuple of int
        ``(sy, sx)``.

    Notes
    -----
    Top-down (:meth:`sample`) scatters each window back and **averages** overlapping
    contributions. Input positions that no window covers (when the stride exceeds the patch,
    or at a border the floor division leaves out) receive 0.
    """

    _coverage: Tensor  # buffer (H, W): how many windows cover each input position
    _inverse_coverage: Tensor  # buffer (H, W): 1 / max(coverage, 1)
    _covering_window: Tensor  # buffers: the windows covering each position (_covering_windows)
    _covering_offset: Tensor
    _first_covering: Tensor

    def __init__(self, input_shape: Shape, patch_size: tuple[int, int], stride: tuple[int, int]):
        super().__init__(input_shape)
        self.patch_size = patch_size
        self.stride = stride
        self.output_shape(input_shape)  # fail at build time
        # How many windows cover each input position; depends only on shapes, so compute once.
        h, w, _ = input_shape
        self.register_buffer("_coverage", self._count_coverage(h, w), persistent=False)
        # Whether any input position is covered twice (then sample() divides by the counts).
        self._overlaps = bool((self._coverage > 1).any())
        inverse = 1.0 / self._coverage.clamp_min(1.0)  # uncovered positions: 0 * 1
        self.register_buffer("_inverse_coverage", inverse, persistent=False)
        window, offset, first = self._covering_windows(h, w)
        self.register_buffer("_covering_window", window, persistent=False)
        self.register_buffer("_covering_offset", offset, persistent=False)
        self.register_buffer("_first_covering", first, persistent=False)
        # Whether sample() of built windows beats reading them from a table (average_rows,
        # average_mixtures): a single window is a reshape, and single-channel windows are
        # small while the per-entry index or convolution overhead is not (E's F(3,1) on the
        # image: 0.7 against 1.5 ms by embedding_bag, 3.7 against 5.9 ms by transposed
        # convolution; its F(12,1) top: 0.5 against 5.4 ms; one thread).
        ho, wo, _ = self.output_shape(input_shape)
        self._windows_are_cheap = input_shape[2] == 1 or ho * wo == 1

    def output_shape(self, input_shape: Shape) -> Shape:
        """Return ``((H-fy)//sy+1, (W-fx)//sx+1, fy*fx*C)``."""
        h, w, c = input_shape
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        if fy > h or fx > w:
            raise ValueError(f"patch {fy}x{fx} does not fit a {h}x{w} input")
        return (windows_along(h, fy, sy), windows_along(w, fx, sx), fy * fx * c)

    def _count_coverage(self, h: int, w: int) -> Tensor:
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        ones = torch.ones(1, fy * fx, windows_along(h, fy, sy) * windows_along(w, fx, sx))
        return F.fold(ones, (h, w), (fy, fx), stride=(sy, sx))[0, 0]  # (H, W)

    def _covering_windows(self, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
        """Return, for every input position in row-major order, the windows that cover it.

        Flat lists over all (window, offset) pairs sorted by the input position they land
        on: the window's index ``i * Wo + j``, the offset ``dy * fx + dx`` inside it, and
        where each position's run starts (an uncovered position has an empty run).
        """
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        ho, wo = windows_along(h, fy, sy), windows_along(w, fx, sx)
        i, j, dy, dx = torch.meshgrid(
            torch.arange(ho), torch.arange(wo), torch.arange(fy), torch.arange(fx), indexing="ij"
        )
        position = ((i * sy + dy) * w + j * sx + dx).reshape(-1)
        order = torch.argsort(position, stable=True)
        window = (i * wo + j).reshape(-1)[order]
        offset = (dy * fx + dx).reshape(-1)[order]
        counts = torch.bincount(position, minlength=h * w)
        return window, offset.int(), (torch.cumsum(counts, 0) - counts).int()

    def average_rows(
        self, table: Float[Tensor, "R D"], rows: Int[Tensor, "N Ho Wo"]
    ) -> Float[Tensor, "N H W C"]:
        """Return :meth:`sample` of the windows ``table[rows]``, without building them.

        Every window is one row of ``table`` (``D = fy * fx * C``; leading axes are
        flattened): e.g. a GMM layer's means and the row it drew at each position
        (:meth:`~dcgmm.layers.GMM.component_rows`). Each input position averages the
        entries that its covering windows put there, read straight from the table by one
        ``embedding_bag``. The windows (E's F(4,2): 23 MB a batch of 100) are never written,
        nor added slice by slice (E's F(4,2): 2 against 11 ms, one thread;
        ``benchmarks/bench_preset.py`` times sampling). Where the windows are cheap to build
        they are built (see ``_windows_are_cheap``).
        """
        h, w, c = self.input_shape
        n = rows.shape[0]
        if self._windows_are_cheap:
            windows = table.reshape(-1, table.shape[-1]).index_select(0, rows.reshape(-1))
            return self.sample(windows.reshape(*rows.shape, -1))
        per_window = self.patch_size[0] * self.patch_size[1]
        entries = table.reshape(-1, c)  # row r * fy * fx + offset: entry `offset` of window r
        # int32 indices and offsets: half the traffic of int64 on the N * P index arithmetic.
        first = (rows.reshape(n, -1) * per_window).int()
        # gather, not first[:, window]: 4x faster here (one thread).
        index = torch.gather(first, 1, self._covering_window.expand(n, -1)) + self._covering_offset
        covering = self._covering_window.numel()
        images = torch.arange(n, dtype=torch.int32, device=rows.device)[:, None]
        bags = self._first_covering + covering * images  # int32, as the indices
        # mode="sum" then a product: "mean" was 3-8x slower for narrow rows (torch 2.13 CPU).
        summed = F.embedding_bag(index.reshape(-1), entries, bags.reshape(-1), mode="sum")
        summed = summed.reshape(n, h, w, c)
        if self._overlaps:
            summed.mul_(self._inverse_coverage.to(summed.dtype)[:, :, None])
        return summed

    def average_mixtures(
        self, weights: Float[Tensor, "N Ho Wo K"], table: Float[Tensor, "K D"]
    ) -> Float[Tensor, "N H W C"]:
        """Return :meth:`sample` of the windows ``weights @ table``, without building them.

        The windows are mixtures of the rows of one table shared by every position (a shared
        GMM layer's means, weighted by its conditional-expectation weights), so the average
        of the overlapping windows is a transposed convolution of the weights with the
        table's rows as filters, divided by the coverage: one oneDNN call (E's F(4,2): 5.6
        against 13.6 ms for the product and the slice-by-slice sum, one thread). Where the
        windows are cheap to build they are built (see ``_windows_are_cheap``).
        """
        if self._windows_are_cheap:
            return self.sample(weights @ table)
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        h, w, c = self.input_shape
        k = table.shape[0]
        filters = table.reshape(k, fy, fx, c).permute(0, 3, 1, 2)  # (K, C, fy, fx)
        # The rows and columns that the floor division leaves uncovered, below and right.
        uncovered = ((h - fy) % sy, (w - fx) % sx)
        with full_float32_convolutions(weights.device):
            summed = F.conv_transpose2d(
                weights.permute(0, 3, 1, 2), filters, stride=(sy, sx), output_padding=uncovered
            ).permute(0, 2, 3, 1)  # (N, H, W, C); contiguous when oneDNN kept NHWC
        return summed * self._inverse_coverage.to(summed.dtype)[:, :, None]

    def forward(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N Ho Wo P"]:
        """Return the folded map; each output position holds one flattened window."""
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        n, h, w, c = x.shape
        if windows_along(h, fy, sy) == 1 and windows_along(w, fx, sx) == 1:
            # One window (e.g. a top layer's F(12,1) on 12x12): its (dy, dx, c) order is the
            # input's row-major order, so it is a reshape (a view when it covers the input),
            # whose gradient is one too (sharpening: unfold's backward took 7 ms here).
            return x[:, :fy, :fx].reshape(n, 1, 1, fy * fx * c)
        windows = x.unfold(1, fy, sy).unfold(2, fx, sx)  # (N, Ho, Wo, C, fy, fx), a view
        ho, wo = windows.shape[1], windows.shape[2]
        # One copy, into the (dy, dx, c) channel order of the spec.
        return windows.permute(0, 1, 2, 4, 5, 3).reshape(n, ho, wo, fy * fx * c)

    def sample(
        self, control: Float[Tensor, "N Ho Wo P"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "N H W C"]:
        """Scatter windows back to the input grid, averaging where windows overlap.

        Summed in NHWC by strided slices, one add per window offset or one per window,
        whichever is fewer (``F.fold`` wants NCHW columns: two permuted copies and a slow
        col2im on the CPU; ``benchmarks/bench_preset.py`` times sampling).
        """
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        h, w, c = self.input_shape
        n, ho, wo, _ = control.shape
        windows = control.reshape(n, ho, wo, fy, fx, c)
        summed = control.new_zeros(n, h, w, c)
        if fy * fx <= ho * wo:  # every offset (dy, dx) adds one strided slice of the grid
            for dy in range(fy):
                for dx in range(fx):
                    rows = slice(dy, dy + sy * (ho - 1) + 1, sy)
                    cols = slice(dx, dx + sx * (wo - 1) + 1, sx)
                    summed[:, rows, cols] += windows[:, :, :, dy, dx]
        else:  # few windows, each a block
            for i in range(ho):
                for j in range(wo):
                    summed[:, i * sy : i * sy + fy, j * sx : j * sx + fx] += windows[:, i, j]
        if self._overlaps:  # a host bool, computed at build time
            summed.mul_(self._inverse_coverage.to(control.dtype)[:, :, None])
        return summed

    def extra_repr(self) -> str:
        """Return the spec token, short form when the window and stride are square."""
        (fy, fx), (sy, sx) = self.patch_size, self.stride
        if fy == fx and sy == sx:
            return f"F({fy},{sy})"
        return f"F({fy},{fx},{sy},{sx})"

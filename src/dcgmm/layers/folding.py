"""Folding: cut windows out of a feature map and stack each window into the channel axis.

Folding is the "half-convolution" of a DCGMM: a following GMM layer applied to the folded map
is a convolution whose filters are Gaussian densities.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

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

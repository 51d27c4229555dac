"""Max-pooling over each channel, with nearest-neighbour upsampling top-down."""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from dcgmm.layers.base import Layer, Shape

__all__ = ["MaxPooling", "pooled_size", "upsampling_matrix"]


def pooled_size(size: int, kernel: int, stride: int, ceil_mode: bool) -> int:
    """Return the number of pooling windows along one axis (PyTorch's rule, no padding).

    Floor mode: ``(size - kernel) // stride + 1``. Ceil mode: ``1 + ceil((size - kernel) /
    stride)`` (the reference code's rule, needed by config C: 21 -> 11), dropping a last window
    that would start outside the input.
    """
    if not ceil_mode:
        return (size - kernel) // stride + 1
    out = 1 + math.ceil((size - kernel) / stride)
    if (out - 1) * stride >= size:
        out -= 1
    return out


def upsampling_matrix(size: int, kernel: int, stride: int, n_out: int) -> Tensor:
    """Return the (size, n_out) matrix that spreads window values back onto one axis.

    Row ``i`` averages the windows that cover input position ``i``; a position that no window
    covers takes the nearest window's value. Because window coverage in 2-D is a product of
    the coverage along each axis, two such matrices give the 2-D top-down map.
    """
    cover = torch.zeros(size, n_out)
    for o in range(n_out):
        cover[o * stride : min(o * stride + kernel, size), o] = 1.0
    counts = cover.sum(1, keepdim=True)
    for i in torch.nonzero(counts[:, 0] == 0).flatten().tolist():
        cover[i, min(i // stride, n_out - 1)] = 1.0
    return cover / cover.sum(1, keepdim=True)


class MaxPooling(Layer):
    """Max-pooling with a square ``kernel`` and ``stride``, floor or ceil output size.

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)`` of the input.
    kernel : int
        Window side.
    stride : int
        Window step.
    ceil_mode : bool
        Use ``1 + ceil((H - kernel) / stride)`` windows (partial windows at the border).
    """

    def __init__(self, input_shape: Shape, kernel: int, stride: int, *, ceil_mode: bool = False):
        super().__init__(input_shape)
        self.kernel = kernel
        self.stride = stride
        self.ceil_mode = ceil_mode
        ho, wo, _ = self.output_shape(input_shape)
        h, w, _ = input_shape
        self.register_buffer("_up_rows", upsampling_matrix(h, kernel, stride, ho), False)
        self.register_buffer("_up_cols", upsampling_matrix(w, kernel, stride, wo), False)

    def propagate_missing(self, missing: Tensor) -> Tensor:
        """Return which pooled positions have no observed entry in their whole window."""
        return ~(self((~missing).to(torch.float32)) > 0.5)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Return the pooled ``(H', W', C)``."""
        h, w, c = input_shape
        if self.kernel > h or self.kernel > w:
            raise ValueError(f"kernel {self.kernel} does not fit a {h}x{w} input")
        k, s, ceil = self.kernel, self.stride, self.ceil_mode
        return (pooled_size(h, k, s, ceil), pooled_size(w, k, s, ceil), c)

    def forward(self, x: Float[Tensor, "N H W C"]) -> Float[Tensor, "N Ho Wo C"]:
        """Return the maximum of each window, per channel."""
        # max_pool2d is NCHW-only; permute locally and back.
        pooled = F.max_pool2d(
            x.permute(0, 3, 1, 2), self.kernel, self.stride, ceil_mode=self.ceil_mode
        )
        return pooled.permute(0, 2, 3, 1)

    def sample(
        self, control: Float[Tensor, "N Ho Wo C"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "N H W C"]:
        """Upsample by nearest neighbour: each input position takes its window's value."""
        rows = self._up_rows.to(control.dtype)
        cols = self._up_cols.to(control.dtype)
        # y, x: input rows and columns; o, p: window rows and columns. einsum leaves the
        # channels strided (an N, H, C, W layout); every layer above reads NHWC, and
        # max_pool2d on such a view took 10.9 ms instead of 1.7 (preset C's sharpening climb).
        return torch.einsum("yo,nopc,xp->nyxc", rows, control, cols).contiguous()

    def extra_repr(self) -> str:
        """Return the spec token."""
        mode = ",ceil" if self.ceil_mode else ""
        return f"P({self.kernel},{self.stride}{mode})"

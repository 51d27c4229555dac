"""The grouped products of an independent GMM layer: one small matrix product per position.

Every position l has its own filters W_l (K, C) and bias b_l, so the log-joints of its windows
X_l (C, N) are ``W_l X_l + b_l``, and the layer's statistics the products of the output
gradient with the windows, ``D_l X_l^T``. On the CPU in float32, for wide windows, the
log-joints are one oneDNN grouped 1x1 convolution (the positions are the groups, the batch is
the width); elsewhere, batched matrix products (:mod:`dcgmm.stages.independent` cuts the
windows and runs the stage; measurements in ``docs/speed_independent.md``).
"""

import torch
from torch import Tensor

__all__ = [
    "grouped_products",
    "grouped_products_batch_last",
    "grouped_statistics",
    "onednn_applies",
]

# The log-joints of windows of fewer values per position than this run faster through MKL's
# batched products (measured for 2D = 18: 1.3 vs 1.7 ms, one thread).
_ONEDNN_MIN_CHANNELS = 64


def onednn_applies(features: Tensor) -> bool:
    """Return whether windows ``features`` (L, C, N) go through oneDNN's grouped product."""
    return _onednn_applies_to(features, features.shape[1])


def _onednn_applies_to(tensor: Tensor, channels: int) -> bool:
    """Return whether windows of ``channels`` values, like ``tensor``, go through oneDNN."""
    return bool(
        channels >= _ONEDNN_MIN_CHANNELS
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and torch.backends.mkldnn.enabled
    )


def grouped_products(
    weight: Tensor, bias: Tensor, features: Tensor, out: Tensor | None = None
) -> Tensor:
    """Return ``weight[l] @ features[l] + bias[l, :, None]`` for every position l, batch first.

    Parameters
    ----------
    weight : Tensor, shape (L, K, C), contiguous
    bias : Tensor, shape (L, K)
    features : Tensor, shape (L, C, N), contiguous
    out : Tensor, shape (N, L, K), optional
        Where to write the result (e.g. a slice of positions of a bigger output).

    Returns
    -------
    Tensor, shape (N, L, K)
        The layout of the next layer's input; contiguous unless ``out`` is not.

    On the CPU in float32, for wide windows, this is :func:`grouped_products_batch_last`'s
    oneDNN convolution, transposed. Otherwise one batched product in the (L, N, K)
    orientation, whose copy to (N, L, K) moves runs of K values (0.2 ms for preset E's first
    layer, where the (L, K, N) orientation's took 1.8 ms).
    """
    if onednn_applies(features):
        batch_first = grouped_products_batch_last(weight, bias, features).permute(2, 0, 1)
    else:
        per_position = torch.baddbmm(
            bias.unsqueeze(1), features.transpose(1, 2), weight.transpose(1, 2)
        )
        batch_first = per_position.transpose(0, 1)
    return batch_first.contiguous() if out is None else out.copy_(batch_first)


def grouped_products_batch_last(weight: Tensor, bias: Tensor, features: Tensor) -> Tensor:
    """Return ``weight[l] @ features[l] + bias[l, :, None]`` as (L, K, N), contiguous.

    Shapes as :func:`grouped_products`. On the CPU in float32, for wide windows, this is
    oneDNN's grouped 1x1 convolution, called directly: ``F.conv2d`` sends a single-threaded
    1x1 convolution of a batch of one to its own slower kernel instead. Otherwise one batched
    product.
    """
    positions, k, channels = weight.shape
    n = features.shape[-1]
    if onednn_applies(features):
        product = torch.mkldnn_convolution(
            features.view(1, positions * channels, 1, n),
            weight.view(positions * k, channels, 1, 1),
            bias.reshape(-1).contiguous(),
            [0, 0], [1, 1], [1, 1], positions,
        )  # fmt: skip
        return product.view(positions, k, n)
    return torch.baddbmm(bias.unsqueeze(-1), weight, features)


def grouped_statistics(d_out: Tensor, features: Tensor, out: Tensor | None = None) -> Tensor:
    """Return ``d_out[l] @ features[l].T`` for every position l: (L, K, C), into ``out`` if given.

    The weight gradient of :func:`grouped_products`, given its output gradient ``d_out``
    (L, K, N) and its ``features`` (L, C, N): one MKL batched product, which reads the
    transposed features and a strided ``d_out`` as they lie. Until 2026-12-06 wide windows
    took oneDNN's grouped weight gradient instead; on that day's AMD EPYC it ran a gemm-based
    implementation and was no faster: 14.9 against 14.0 ms on preset E's second independent
    layer, one thread (``python -m benchmarks.bench_independent``,
    ``docs/speed_independent.md``), so the simpler product stays.
    """
    return torch.bmm(d_out, features.transpose(1, 2), out=out)

r"""A hard objective's statistics as sums of the windows each component wins.

For the annealed objective and the max-component one, the gradient of the mean objective with
respect to a window's log-joints is one row of a (K, K) table, picked by the window's winner:
:math:`R_m = T_{b_m}` (:class:`~dcgmm.layers.gmm_gradients.WinnerRows`). The statistics of a
folded stage, its convolution's weight gradient :math:`G_k = \sum_m R_{mk} [x^2, x]_m`, are
then

.. math:: G_k = \sum_j T_{jk} S_j, \qquad S_j = \sum_{m:\, b_m = j} [x^2, x]_m,

K sums of windows (each window added once, to its winner's sum) and a (K, K) product, where
the convolution's weight gradient multiplies every window by all K entries of its row of R:
for preset E's second GMM layer (14,400 windows of 800 values, K = 25), 11.5M additions
against 288M multiply-adds.

Eager PyTorch adds a scatter's rows one by one (22 ms there, one thread), so the sums are
taken compiled (:mod:`dcgmm._compiling`: inductor reads the windows straight from the input,
never cutting them out), on one thread: a parallel scatter adds atomically. The stage's whole
statistics pass, E's second layer, 28.0 -> 20.6 ms at one thread and 15.4 -> 12.9 ms at two
(``python -m benchmarks.bench_window_sums``, ``docs/speed_window_sums.md``, 2026-12-07).
Where they are not compiled (float64, GPUs, ``DCGMM_COMPILE=0``, small layers, many threads
per component: :func:`pays`), the stage takes its convolution's weight gradient.
"""

import torch
from torch import Tensor

from dcgmm import _compiling
from dcgmm._numerics import full_float32_convolutions
from dcgmm.layers.gmm_gradients import WinnerRows

__all__ = ["MIN_ADDITIONS", "MIN_COMPONENTS_PER_THREAD", "pays", "weight_gradient", "window_sums"]

# Below this many additions the compilation (about 1.3 s per layer shape) outweighs the gain.
MIN_ADDITIONS = 2**20
# The sums run on one thread (a parallel scatter adds atomically: 5x slower on 2 threads),
# the weight gradient on all: one thread of sums beat it by 2.3-4.8x at K = 25-49, both on
# one thread (the statistics alone, 2026-12-07), so they pay while each of the product's
# threads has this many components.
MIN_COMPONENTS_PER_THREAD = 12


def window_sums(
    features: Tensor,
    best: Tensor,
    patch_size: tuple[int, int],
    stride: tuple[int, int],
    k: int,
) -> Tensor:
    """Return :math:`S` (K, C, fy, fx): each component's windows of ``features``, summed.

    ``features`` (N, H, W, C) are what the windows are cut from, ``best`` (N, Ho, Wo) the
    winner of each window; ``S[j, c, dy, dx]`` sums ``features[n, y sy + dy, x sx + dx, c]``
    over the windows (n, y, x) that component j wins. Eagerly this cuts the windows out (as
    big as the folded tensor); compiled, it reads them in place.
    """
    (fy, fx), (sy, sx) = patch_size, stride
    c = features.shape[-1]
    windows = features.unfold(1, fy, sy).unfold(2, fx, sx)  # (N, Ho, Wo, C, fy, fx)
    sums = features.new_zeros(k, c, fy, fx)
    return sums.index_add(0, best.reshape(-1), windows.reshape(-1, c, fy, fx))


def _window_sums_by_product(
    features: Tensor,
    best: Tensor,
    patch_size: tuple[int, int],
    stride: tuple[int, int],
    k: int,
) -> Tensor:
    """Return :func:`window_sums` as the weight gradient of a one-hot R (no scatter)."""
    one_hot = features.new_zeros(*best.shape, k).scatter_(-1, best.unsqueeze(-1), 1.0)
    weight = features.new_empty(k, *patch_size, features.shape[-1]).permute(0, 3, 1, 2)
    with full_float32_convolutions(features.device):
        _, sums, _ = torch.ops.aten.convolution_backward(
            one_hot.permute(0, 3, 1, 2), features.permute(0, 3, 1, 2), weight, None,
            list(stride), [0, 0], [1, 1], False, [0, 0], 1, [False, True, False],
        )  # fmt: skip
    return sums


def pays(
    features: Tensor,
    best: Tensor,
    k: int,
    patch_size: tuple[int, int],
    stride: tuple[int, int],
) -> bool:
    """Return whether the compiled sums run for these (N, H, W, C) ``features`` and winners.

    The CPU, float32, enough additions, enough components per thread (the weight gradient
    runs on all threads, the sums on one), and a shape :mod:`dcgmm._compiling` compiles.
    """
    additions = best.numel() * patch_size[0] * patch_size[1] * features.shape[-1]
    return (
        features.device.type == "cpu"
        and features.dtype == torch.float32
        and additions >= MIN_ADDITIONS
        and k >= MIN_COMPONENTS_PER_THREAD * torch.get_num_threads()
        and _compiling.will_compile(window_sums, features, best, patch_size, stride, k)
    )


def weight_gradient(
    features: Tensor,
    winners: WinnerRows,
    k: int,
    patch_size: tuple[int, int],
    stride: tuple[int, int],
) -> Tensor:
    r"""Return :math:`G` (K, C, fy, fx) for ``features`` (N, H, W, C) and the rows of R.

    The weight gradient of the folded convolution of a layer of ``k`` components: the sums
    of :func:`window_sums`, compiled (the caller has asked :func:`pays`; by a one-hot product
    where compiling failed or has run out of shapes), times the table of R's rows.
    """
    sums = _compiling.call(
        window_sums, _window_sums_by_product, features, winners.best, patch_size, stride, k,
        applies=True, single_threaded=True,
    )  # fmt: skip
    table = winners.table
    if table.dim() == 0:  # the identity, scaled: R is one-hot
        return sums * table
    return torch.einsum("jk,jcyx->kcyx", table, sums)

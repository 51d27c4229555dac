"""Boundary checks with messages that say what was wrong, what was expected and a hint."""

from collections.abc import Sequence

import torch
from torch import Tensor

Shape = tuple[int, int, int]


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive int, else raise a ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__} {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}.")
    return value


def check_shape(shape: Sequence[int], name: str = "input_shape") -> Shape:
    """Return ``shape`` as an (H, W, C) tuple of positive ints or raise a ``ValueError``."""
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise ValueError(
            f"{name} must be (H, W, C), three positive ints; got {tuple(shape)!r}. "
            "For a gray image of 28x28 pixels pass (28, 28, 1)."
        )
    if any(s <= 0 for s in shape):
        raise ValueError(f"{name} must have positive sizes; got {tuple(shape)!r}.")
    return (shape[0], shape[1], shape[2])


def check_nhwc(x: Tensor, hwc: Shape, name: str = "x") -> None:
    """Raise a ``ValueError`` unless ``x`` is a floating NHWC batch of images of shape ``hwc``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if not (x.ndim == 4 and tuple(x.shape[1:]) == hwc):
        looks_nchw = x.ndim == 4 and tuple(x.shape[1:]) == (hwc[2], hwc[0], hwc[1])
        hint = " It looks like NCHW; pass x.permute(0, 2, 3, 1)." if looks_nchw else ""
        if x.ndim == 3 and tuple(x.shape[1:]) == hwc[:2] and hwc[2] == 1:
            hint = " Add the channel axis: x.unsqueeze(-1)."
        raise ValueError(
            f"{name} must be NHWC with shape (N, {hwc[0]}, {hwc[1]}, {hwc[2]}); "
            f"got {tuple(x.shape)}.{hint}"
        )
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating tensor with pixels in [0, 1]; got dtype {x.dtype}. "
            "Convert uint8 images with x.float() / 255."
        )

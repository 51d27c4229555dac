"""Boundary checks with messages that say what was wrong, what was expected and a hint."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "UINT8_MAX",
    "Shape",
    "check_device",
    "check_images",
    "check_nhwc",
    "check_pixels",
    "check_positive_int",
    "check_shape",
]

Shape = tuple[int, int, int]

# Largest pixel value of 8-bit images: a float batch whose values are whole numbers up to this
# was almost certainly meant as uint8 pixels.
UINT8_MAX = 255


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
    """Raise unless ``x`` is a floating NHWC batch of images of shape ``hwc``.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor, or not floating (uint8 images get a hint to divide by 255).
    ValueError
        If the shape is not ``(N, *hwc)``; NCHW input gets a hint to permute.
    """
    if not isinstance(x, Tensor):
        hint = " Convert it with torch.from_numpy(x)." if type(x).__name__ == "ndarray" else ""
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.{hint}")
    if not (x.ndim == 4 and tuple(x.shape[1:]) == hwc):
        h, w, c = hwc
        looks_nchw = x.ndim == 4 and tuple(x.shape[1:]) == (c, h, w)
        if looks_nchw:
            hint = " It looks like NCHW; pass x.permute(0, 2, 3, 1)."
        elif x.ndim == 3 and tuple(x.shape[1:]) == (h, w) and c == 1:
            hint = " Add the channel axis: x.unsqueeze(-1)."
        elif x.ndim == 3 and tuple(x.shape) == hwc:
            hint = " It is a single image; add the batch axis: x.unsqueeze(0)."
        elif x.ndim == 4:
            hint = (
                f" The model was built for {h}x{w}x{c} images: resize or crop the images, or "
                f"build a model for them with DCGMM.from_spec(spec, input_shape="
                f"{tuple(x.shape[1:])})."
            )
        else:
            hint = ""
        raise ValueError(
            f"{name} must be NHWC with shape (N, {h}, {w}, {c}); got {tuple(x.shape)}.{hint}"
        )
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} must be a floating tensor with pixels in [0, 1]; got dtype {x.dtype}. "
            "Convert uint8 images with x.float() / 255."
        )


def check_pixels(x: Tensor, name: str = "x") -> None:
    """Raise a ``ValueError`` unless every value of the float tensor ``x`` is in [0, 1].

    NaN and infinite values are refused with a count; float images of whole numbers up to
    255 get a hint to divide by 255. Costs one pass over ``x`` and one host synchronisation.
    """
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.stack(torch.aminmax(x.detach())).tolist())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan, n_inf = (int(v) for v in torch.stack([x.isnan().sum(), x.isinf().sum()]).tolist())
        raise ValueError(
            f"found {n_nan} NaN and {n_inf} infinite values in {name}; expected finite pixels "
            "in [0, 1]. Check the preprocessing (a division by zero?); to fill in missing pixels, "
            "mark them NaN and call dcgmm.inpaint."
        )
    if lo < 0 or hi > 1:
        whole = bool((x == x.round()).all())
        if lo >= 0 and hi <= UINT8_MAX and whole:
            hint = "They look like 0-255 pixels: divide by 255."
        else:
            hint = (
                "Rescale them, e.g. (x - x.min()) / (x.max() - x.min()); undo a mean/std "
                "normalisation; or clamp small overshoots with x.clamp(0, 1)."
            )
        raise ValueError(
            f"{name} must hold pixels in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]. {hint}"
        )


def check_images(x: Tensor, hwc: Shape, name: str = "x") -> None:
    """Run :func:`check_nhwc` and :func:`check_pixels`: a float NHWC batch of pixels in [0, 1]."""
    check_nhwc(x, hwc, name)
    check_pixels(x, name)


def check_device(device: str | torch.device, name: str = "device") -> torch.device:
    """Return ``device`` as a torch.device, or raise a ValueError if this machine lacks it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{name} {device!r} is not a device ({err}); expected cpu, cuda or cuda:N"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "is a CPU build" if torch.version.cuda is None else "sees no CUDA device"
            raise ValueError(
                f"{name} {str(device)!r}: this PyTorch ({torch.__version__}) {why}; use cpu, or "
                "install a CUDA build of PyTorch on a machine with an NVIDIA GPU"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name} {str(device)!r}: there are {torch.cuda.device_count()} CUDA devices "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    elif parsed.type != "cpu" and parsed.type != "mps":
        raise ValueError(f"{name} {str(device)!r} is not supported; expected cpu or cuda[:N]")
    return parsed

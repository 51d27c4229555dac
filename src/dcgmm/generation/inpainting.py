"""In-painting and variant generation (spec §5): forward to a GMM layer, sample back down.

The image goes up to a chosen GMM layer, every GMM layer on the way marginalising the
missing pixels (their terms leave the diagonal-Gaussian log-density; the authors' code
instead fills them with 0, available as ``marginalize=False``); that layer's
responsibilities become the control signal of a top-down walk
(:func:`dcgmm.generation.sampling.walk_down`); the known pixels are then put back unchanged.
Variants are the same without a mask: new images that share the chosen layer's reading of the input.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dcgmm._validation import check_nhwc
from dcgmm.exceptions import DataError
from dcgmm.generation.sampling import SamplingConfig, sampling_layers, walk_down
from dcgmm.layers import Layer
from dcgmm.model import DCGMM

__all__ = [
    "MASK_KINDS",
    "inpaint",
    "make_mask",
    "read_and_resample",
    "upward_observed",
    "upward_with_missing",
    "variants",
]

MASK_KINDS = ("right-half", "left-half", "top-half", "bottom-half", "center", "random:P", "PNG")


def make_mask(
    kind: str, shape: tuple[int, ...], *, generator: torch.Generator | None = None
) -> Tensor:
    """Return a boolean (N, H, W, C) mask, True where pixels are missing.

    Parameters
    ----------
    kind : str
        ``right-half``, ``left-half``, ``top-half``, ``bottom-half``, ``center`` (the middle
        half in both directions), ``random:P`` (each pixel missing with probability P), or
        the path of a PNG/NPY file whose non-zero pixels mark the missing ones (H x W).
    shape : tuple of int
        ``(N, H, W, C)`` of the images.
    """
    n, h, w, c = shape
    mask = torch.zeros(h, w, dtype=torch.bool)
    if kind == "right-half":
        mask[:, w // 2 :] = True
    elif kind == "left-half":
        mask[:, : w // 2] = True
    elif kind == "top-half":
        mask[: h // 2] = True
    elif kind == "bottom-half":
        mask[h // 2 :] = True
    elif kind == "center":
        mask[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = True
    elif kind.startswith("random:"):
        try:
            p = float(kind.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"random mask needs a probability, e.g. random:0.5; got {kind!r}"
            ) from None
        if not 0 < p < 1:
            raise ValueError(f"random mask probability must lie in (0, 1); got {p}")
        noise = torch.rand((n, h, w, 1), generator=generator)
        return (noise < p).expand(n, h, w, c).clone()
    elif Path(kind).suffix.lower() in (".png", ".npy"):
        mask = _mask_from_file(Path(kind), (h, w))
    else:
        raise ValueError(f"unknown mask {kind!r}; use one of {', '.join(MASK_KINDS)}")
    return mask[None, :, :, None].expand(n, h, w, c).clone()


def _mask_from_file(path: Path, size: tuple[int, int]) -> Tensor:
    if not path.exists():
        raise DataError(f"mask file {path} does not exist")
    if path.suffix.lower() == ".npy":
        array = np.load(path)
    else:
        from dcgmm.io.images import read_png

        array = read_png(path)
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != size:
        raise DataError(f"mask {path} is {array.shape[0]}x{array.shape[1]}; images are {size}")
    return torch.from_numpy(np.asarray(array) != 0)


def upward_with_missing(
    layers: list[Layer], index: int, x: Tensor, missing: Tensor | None
) -> Tensor:
    """Return the responsibilities of ``layers[index]`` with missing entries marginalised.

    Every GMM layer on the way ignores the entries that carry no observation (their terms
    leave the log-density), so hidden pixels do not pretend to be black.
    """
    h = x
    for lay in layers[: index + 1]:
        h_next = lay.forward_observed(h, missing)
        if missing is not None:
            missing = lay.propagate_missing(missing)
            if not bool(missing.any()):
                missing = None
        h = h_next
    return h


def upward_observed(model: DCGMM, index: int, x: Tensor, missing: Tensor | None) -> Tensor:
    """:func:`upward_with_missing` through the model's fused stages (the same numbers).

    A fused folding + GMM stage marginalises the missing entries in one convolution or
    grouped product (``log_joint_observed``) instead of building the folded tensor.
    """
    h = x
    for stage in model.stages:
        if stage.index > index:
            break
        h_next = stage.forward(h) if missing is None else stage.forward_observed(h, missing)
        if missing is not None:
            missing = stage.propagate_missing(missing)
            if not _anything_missing(missing):
                missing = None
        h = h_next
    return h


def read_and_resample(
    model: DCGMM,
    images: Tensor,
    missing: Tensor | None,
    layer: int | None,
    config: SamplingConfig | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Go up to GMM layer ``layer`` (marginalising ``missing``), walk back down, clip to [0, 1].

    The one pipeline behind :func:`inpaint` and :func:`variants`.
    """
    config = config or SamplingConfig()
    config.check_fits(model)
    layers = sampling_layers(model)
    index = model.gmm_layer_number(layer) - 1
    control = upward_observed(model, index, images, missing)
    return walk_down(layers, index, control, config, generator).clamp(0, 1)


def inpaint(
    model: DCGMM,
    images: Tensor,
    missing: Tensor | None = None,
    *,
    layer: int | None = None,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    fill: float = 0.0,
    marginalize: bool = True,
) -> Tensor:
    """Complete the missing pixels of ``images``.

    Parameters
    ----------
    images : Tensor, shape (N, H, W, C)
        Images in [0, 1]; missing pixels may be NaN (then ``missing`` can be left out).
    missing : Tensor of bool, optional
        True where a pixel is missing; default: the NaN pixels of ``images``.
    layer : int, optional
        1-based index of the GMM layer whose responsibilities drive the completion; default
        the top GMM layer.
    marginalize : bool
        Leave the missing pixels out of every GMM layer's density on the way up (default).
        ``False`` treats them as pixels of value ``fill`` (what the authors' code does).
    fill : float
        Value the missing pixels take for the upward pass when not marginalised.

    Returns
    -------
    Tensor
        The images with missing pixels sampled (clipped to [0, 1]) and every known pixel
        bit-identical to the input.
    """
    with torch.no_grad():
        check_nhwc(images, model.input_shape, "images")  # NaN allowed here: it marks missing
        missing = _checked_mask(images, missing)
        known = images.masked_fill(missing, fill)
        model.check_input(known, "images")
        hidden = missing if marginalize else None
        completed = read_and_resample(model, known, hidden, layer, config, generator)
        return torch.where(missing, completed, images)


def _anything_missing(missing: Tensor) -> bool:
    """Return whether any entry is missing; a mask expanded along its last axis is read once."""
    return bool((missing[..., :1] if missing.stride(-1) == 0 else missing).any())


def _checked_mask(images: Tensor, missing: Tensor | None) -> Tensor:
    """Return the bool mask of missing pixels, shaped as ``images`` (default: the NaNs)."""
    if missing is None:
        missing = torch.isnan(images)
        if not bool(missing.any()):
            raise ValueError(
                "nothing to in-paint: pass a boolean mask as missing= or mark the missing "
                "pixels NaN"
            )
    if not isinstance(missing, Tensor) or missing.dtype != torch.bool:
        got = missing.dtype if isinstance(missing, Tensor) else type(missing).__name__
        raise TypeError(
            f"missing must be a bool tensor, True where a pixel is missing; got {got}. Use "
            "make_mask(...) or a comparison such as mask > 0"
        )
    if missing.shape != images.shape:
        try:
            missing = missing.expand_as(images)
        except RuntimeError:
            raise ValueError(
                f"missing has shape {tuple(missing.shape)}; expected the images' shape "
                f"{tuple(images.shape)} or one that broadcasts to it, e.g. (N, H, W, 1)"
            ) from None
    return missing


def variants(
    model: DCGMM,
    images: Tensor,
    *,
    layer: int | None = None,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Return new images sampled from ``layer``'s responsibilities for ``images``."""
    with torch.no_grad():
        model.check_input(images, "images")
        return read_and_resample(model, images, None, layer, config, generator)

"""Top-down sampling: start at the top GMM layer and walk down every layer's ``sample``.

Procedures live here, not in the layers; sharpening and in-painting build on this module.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dcgmm.layers import GMM, Layer, LinearClassifier
from dcgmm.model import DCGMM


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Knobs of top-down sampling (spec §5).

    Attributes
    ----------
    top_s : int, optional
        Keep only the S largest control entries at every GMM position (ties kept).
    noise_divisor : float, optional
        Emit ``mean + noise / (s * divisor)``; ``None`` emits the component means.
    start : {"uniform", "weights"}
        Control signal of the top GMM layer: uniform, or its mixing weights pi.
    """

    top_s: int | None = None
    noise_divisor: float | None = None
    start: Literal["uniform", "weights"] = "uniform"

    def __post_init__(self) -> None:
        if self.top_s is not None and self.top_s <= 0:
            raise ValueError(f"top_s must be positive or None; got {self.top_s}")
        if self.noise_divisor is not None and self.noise_divisor <= 0:
            raise ValueError(f"noise_divisor must be positive or None; got {self.noise_divisor}")
        if self.start not in ("uniform", "weights"):
            raise ValueError(f"start must be 'uniform' or 'weights'; got {self.start!r}")


@torch.no_grad()
def sample(
    model: DCGMM,
    n: int,
    *,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Draw ``n`` images from a DCGMM by top-down sampling.

    The walk starts at the highest GMM layer (a classifier above it is skipped) with a uniform
    control signal or the mixing weights, then calls ``sample`` of each layer below.

    Returns
    -------
    Tensor, shape (n, H, W, C)
        Images, clipped to [0, 1] when ``clip``.
    """
    config = config or SamplingConfig()
    layers = list(model.layers)
    while layers and isinstance(layers[-1], LinearClassifier):
        layers.pop()
    if not layers or not isinstance(layers[-1], GMM):
        raise ValueError(f"model {model.spec!r} has no GMM layer on top to start sampling from")
    top = layers[-1]
    h, w, k = top.out_shape
    param = top.logits
    if config.start == "weights":
        control = top.weights.expand(n, h, w, k).to(param.dtype)
    else:
        control = param.new_ones(n, h, w, k)
    x: Tensor = control
    for layer in reversed(layers):
        if isinstance(layer, GMM):
            x = layer.sample(
                x, generator=generator, top_s=config.top_s, noise_divisor=config.noise_divisor
            )
        else:
            assert isinstance(layer, Layer)
            x = layer.sample(x, generator=generator)
    return x.clamp(0.0, 1.0) if clip else x

"""Top-down sampling: start at the top GMM layer and walk down every layer's ``sample``.

Procedures live here, not in the layers; sharpening and in-painting build on this module.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dcgmm.layers import GMM, Folding, Layer, LinearClassifier, MaxPooling
from dcgmm.model import DCGMM


@dataclass(frozen=True, kw_only=True)
class Sharpening:
    r"""Gradient ascent on a folding or pooling layer's top-down output (spec §5).

    After the layer's ``sample`` produced :math:`X_0`, repeat ``iterations`` times: forward
    :math:`X` up to the target GMM layer and step :math:`X \leftarrow X + rate\,\nabla_X J`
    with, **per sample**,

    .. math::
        J = \operatorname{mean}_{positions}(\text{target loss}) -
            weight \cdot \operatorname{mean}_{elements}((X - X_0)^2).

    Scale: the gradient is that of each sample's own mean (we do not divide by the batch
    size), so a step does not depend on how many samples are drawn together. The authors'
    code differentiates the batch mean: their ``rate`` equals ours times the batch size
    (their 0.1 at batch 100 is our 0.001). Within a sample, the mean over positions still
    makes per-element gradients small for layers with many positions.

    Attributes
    ----------
    iterations : int
        Ascent steps (papers: 300-1000).
    rate : float
        Step size, per sample (see above).
    weight : float
        Weight of the pull back towards :math:`X_0` (recipes: 0).
    target : {"top", "next"}
        The top GMM layer, or the first GMM layer above the sharpened layer.
    layers : sequence of int, optional
        1-based indices of the folding/pooling layers to sharpen after; default: all that
        have a GMM layer above them.
    """

    iterations: int = 300
    rate: float = 0.01
    weight: float = 0.0
    target: Literal["top", "next"] = "top"
    layers: Sequence[int] | None = None

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0; got {self.iterations}")
        if self.rate <= 0:
            raise ValueError(f"rate must be positive; got {self.rate}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0; got {self.weight}")
        if self.target not in ("top", "next"):
            raise ValueError(f"target must be 'top' or 'next'; got {self.target!r}")


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
    sharpening : Sharpening, optional
        Gradient ascent after folding/pooling layers; ``None`` (default) does none.
    """

    top_s: int | None = None
    noise_divisor: float | None = None
    start: Literal["uniform", "weights"] = "uniform"
    sharpening: Sharpening | None = None

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
    layers: list[Layer] = list(model.layers)  # type: ignore[arg-type]
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
    for index in reversed(range(len(layers))):
        layer = layers[index]
        if isinstance(layer, GMM):
            x = layer.sample(
                x, generator=generator, top_s=config.top_s, noise_divisor=config.noise_divisor
            )
            continue
        assert isinstance(layer, Layer)
        x = layer.sample(x, generator=generator)
        chain = _sharpening_chain(layers, index, config.sharpening)
        if chain:
            assert config.sharpening is not None
            x = sharpen(chain, x, config.sharpening)
    return x.clamp(0.0, 1.0) if clip else x


def _sharpening_chain(layers: list[Layer], index: int, config: Sharpening | None) -> list[Layer]:
    """Return the layers from ``index`` up to the sharpening target, or [] for none."""
    if config is None or config.iterations == 0:
        return []
    if not isinstance(layers[index], Folding | MaxPooling):
        return []
    if config.layers is not None and index + 1 not in config.layers:
        return []
    above = [i for i in range(index + 1, len(layers)) if isinstance(layers[i], GMM)]
    if not above:
        return []
    target = above[0] if config.target == "next" else above[-1]
    return layers[index : target + 1]


def sharpen(chain: Sequence[Layer], x0: Tensor, config: Sharpening) -> Tensor:
    """Run :class:`Sharpening` ascent on ``x0``, the input of ``chain[0]``.

    ``chain`` runs bottom-up from the sharpened layer to the target GMM layer (its last).
    """
    target = chain[-1]
    assert isinstance(target, GMM)
    params = [p for layer in chain for p in layer.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:  # gradients w.r.t. the image only
        p.requires_grad_(False)
    try:
        x = x0.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            for _ in range(config.iterations):
                h = x
                for layer in chain[:-1]:
                    h = layer(h)
                per_position = target.objective_map(target.log_joint(h))
                objective = per_position.flatten(1).mean(1)
                if config.weight:
                    pull = ((x - x0) ** 2).flatten(1).mean(1)
                    objective = objective - config.weight * pull
                (grad,) = torch.autograd.grad(objective.sum(), x)
                with torch.no_grad():
                    x += config.rate * grad
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
    return x.detach()

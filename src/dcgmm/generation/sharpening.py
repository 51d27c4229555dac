"""Sharpening: gradient ascent on a folding or pooling layer's top-down output (spec §5).

Top-down sampling (:mod:`dcgmm.generation.sampling`) calls :func:`sharpen` after every
folding and pooling layer that :class:`Sharpening` names. Each iteration climbs the chain up
to the target GMM layer once: the target's gradient is in closed form (with the folding
below it as one fused convolution where they fuse), and only the layers below that (pooling,
an unfused folding) go through autograd.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dcgmm.layers import GMM, Folding, Layer, MaxPooling
from dcgmm.stages import FoldedGMMStage, fuses

__all__ = ["Sharpening", "SharpeningResult", "sharpen", "sharpening_chain"]


@dataclass(frozen=True, kw_only=True)
class Sharpening:
    r"""Gradient ascent on a folding or pooling layer's top-down output (spec §5).

    After the layer's ``sample`` produced :math:`X_0`, repeat ``iterations`` times: forward
    :math:`X` up to the target GMM layer and step :math:`X \leftarrow X + rate\,\nabla_X J`
    with, **per sample**,

    .. math::
        J = \operatorname{mean}_{positions}(\text{target objective}) -
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
    target : {"next", "top"}
        The first GMM layer above the sharpened layer (default, as the authors' recipes),
        or the top GMM layer. Gradients towards the top must pass through the softmax of
        every GMM layer in between, which vanish where those responsibilities are saturated
        (then sharpening leaves the signal as it is).
    layers : sequence of int, optional
        1-based indices of the folding/pooling layers to sharpen after; default: all that
        have a GMM layer above them.
    """

    iterations: int = 300
    rate: float = 0.01
    weight: float = 0.0
    target: Literal["next", "top"] = "next"
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


def sharpening_chain(layers: Sequence[Layer], index: int, config: Sharpening | None) -> list[Layer]:
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
    return list(layers[index : target + 1])


@dataclass(frozen=True)
class SharpeningResult:
    """The sharpened tensor and the per-sample objective after every iteration."""

    values: Tensor
    trace: Tensor  # (iterations + 1, N): J before the first step, then after each


def sharpen(chain: Sequence[Layer], x0: Tensor, config: Sharpening) -> SharpeningResult:
    """Run :class:`Sharpening` ascent on ``x0``, the input of ``chain[0]``.

    ``chain`` runs bottom-up from the sharpened layer to the target GMM layer (its last).
    A step that would lower a sample's objective is undone and that sample's step size is
    halved (the max over components is not smooth, a fixed step can overshoot), so every
    sample's objective never decreases over the iterations.
    """
    target = chain[-1]
    assert isinstance(target, GMM)
    params = [p for layer in chain for p in layer.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:  # gradients w.r.t. the signal only
        p.requires_grad_(False)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    try:
        with torch.enable_grad():
            # contiguous: every step's tensors take this layout, and strided inputs slow
            # the climb's kernels (pooling, convolution) several-fold
            best = x0.detach().clone(memory_format=torch.contiguous_format)
            best_value, best_grad = _objective_and_grad(chain, best, x0, config)
            rate = torch.full_like(best_value, config.rate)
            trace = [best_value]
            for _ in range(config.iterations):
                candidate = torch.addcmul(best, rate.view(shape), best_grad)
                value, grad = _objective_and_grad(chain, candidate, x0, config)
                better = value >= best_value
                if bool(better.all()):  # the usual case: no pass to merge the old and new
                    best, best_grad, best_value = candidate, grad, value
                else:
                    keep = better.view(shape)
                    best = torch.where(keep, candidate, best)
                    best_grad = torch.where(keep, grad, best_grad)
                    best_value = torch.where(better, value, best_value)
                    rate = torch.where(better, rate, rate / 2)
                trace.append(best_value)
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
    return SharpeningResult(best.detach(), torch.stack(trace))


def _objective_and_grad(
    chain: Sequence[Layer], x: Tensor, x0: Tensor, config: Sharpening
) -> tuple[Tensor, Tensor]:
    """Return the per-sample objective J at ``x`` and its gradient (see Sharpening).

    The target GMM layer gives its gradient in closed form: with the folding below it as
    one fused convolution (:meth:`FoldedGMMStage.objective_and_input_gradient`) where they
    fuse, else alone (:meth:`GMM.objective_and_input_gradient`). Only the layers below
    (pooling, an unfused folding) go through autograd, which carries that gradient down.
    """
    climb, below = _climb(chain)
    if not below:
        objective, grad = climb(x)
    else:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            h = xg
            for layer in below:
                h = layer(h)
            objective, d_h = climb(h.detach())
            (grad,) = torch.autograd.grad(h, xg, grad_outputs=d_h)
    if config.weight:  # - w mean((x - x0)^2) per sample, gradient -2 w (x - x0) / elements
        diff = x.detach() - x0
        objective = objective - config.weight * diff.square().flatten(1).mean(1)
        grad = grad - (2 * config.weight / diff[0].numel()) * diff
    return objective, grad


def _climb(
    chain: Sequence[Layer],
) -> tuple[Callable[[Tensor], tuple[Tensor, Tensor]], Sequence[Layer]]:
    """Return the closed-form climb of ``chain``'s top and the layers below it.

    The top is the target GMM layer, with the folding below it where the two fuse.
    """
    target = chain[-1]
    assert isinstance(target, GMM)
    folding = chain[-2] if len(chain) >= 2 else None
    if isinstance(folding, Folding) and not target.independent and fuses(folding, target):
        return FoldedGMMStage(folding, target, 1).objective_and_input_gradient, chain[:-2]
    return target.objective_and_input_gradient, chain[:-1]

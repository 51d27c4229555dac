"""Top-down generation: sampling and class-conditional sampling (spec §5, §7).

Everything walks the same way: a control signal enters some layer's output space and every
layer below turns it into its input space with its ``sample`` (top-down) mode. In-painting
and variants (:mod:`dcgmm.generation.inpainting`) enter at a GMM layer with its responsibilities;
sharpening (:mod:`dcgmm.generation.sharpening`) climbs after folding and pooling layers.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from dcgmm.generation.sharpening import Sharpening, sharpen, sharpening_chain
from dcgmm.layers import GMM, Folding, Layer, LinearClassifier
from dcgmm.layers.draws import expectation_weights
from dcgmm.model import DCGMM

__all__ = [
    "PerLayer",
    "SamplingConfig",
    "class_control",
    "sample",
    "sampling_layers",
    "walk_down",
]

PerLayer = int | float | Mapping[int, int | float] | None


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Knobs of top-down sampling (spec §5).

    ``top_s`` and ``noise_divisor`` take one value for every GMM layer or a mapping from a
    GMM layer's 1-based index in the spec (as ``dcgmm info`` numbers them) to its value.

    Attributes
    ----------
    top_s : int or mapping, optional
        Keep only the S largest control entries at every GMM position (ties kept).
    noise_divisor : float or mapping, optional
        Emit ``mean + noise / (s * divisor)``; ``None`` emits the component means.
    noise_at_bound : bool
        Also add noise on dimensions whose precision sits at its upper bound (default False:
        those are constant background pixels, noise there is only speckle).
    start : {"uniform", "weights"}
        Control signal of the top GMM layer: uniform, or its mixing weights pi.
    mode : {"draw", "mean"}
        ``draw`` (default) picks one component per position at random; ``mean`` emits the
        control-weighted average of the component means (after top-S), i.e. each layer's
        conditional expectation: deterministic, and the squared-error-optimal completion of
        one GMM layer (use it to in-paint for low MSE; ``draw`` gives sharper pictures).
    sharpening : Sharpening, optional
        Gradient ascent after folding/pooling layers; ``None`` (default) does none.
    """

    top_s: int | Mapping[int, int] | None = None
    noise_divisor: float | Mapping[int, float] | None = None
    noise_at_bound: bool = False
    start: Literal["uniform", "weights"] = "uniform"
    mode: Literal["draw", "mean"] = "draw"
    sharpening: Sharpening | None = None

    def __post_init__(self) -> None:
        for index, s in _values(self.top_s):
            if s <= 0:
                raise ValueError(f"top_s must be positive or None; got {s} for layer {index}")
        for index, d in _values(self.noise_divisor):
            if d <= 0:
                raise ValueError(
                    f"noise_divisor must be positive or None; got {d} for layer {index}"
                )
        if self.noise_at_bound and self.noise_divisor is None:
            raise ValueError(
                "noise_at_bound=True changes where noise is added, and without noise_divisor "
                "none is (means only); pass noise_divisor too"
            )
        if self.start not in ("uniform", "weights"):
            raise ValueError(f"start must be 'uniform' or 'weights'; got {self.start!r}")
        if self.mode not in ("draw", "mean"):
            raise ValueError(f"mode must be 'draw' or 'mean'; got {self.mode!r}")

    def check_fits(self, model: DCGMM) -> None:
        """Raise a ValueError if a per-layer setting names a layer that is not a GMM layer."""
        gmm = {index + 1 for index, _ in model.gmm_layers()}
        for name, setting in (("top_s", self.top_s), ("noise_divisor", self.noise_divisor)):
            if not isinstance(setting, Mapping):
                continue
            for number in setting:
                if number in gmm:
                    continue
                what = (
                    f"is {model.layers[number - 1].spec}, not a GMM layer"
                    if 1 <= number <= len(model.layers)
                    else "does not exist"
                )
                raise ValueError(
                    f"{name} names layer {number}, which {what} in {model.spec!r}; its GMM "
                    f"layers are {sorted(gmm)} (1-based, as `dcgmm info` numbers them)"
                )

    def for_layer(self, index: int) -> tuple[int | None, float | None]:
        """Return (top_s, noise_divisor) for the layer at 0-based ``index``."""
        top_s, divisor = _pick(self.top_s, index), _pick(self.noise_divisor, index)
        return (None if top_s is None else int(top_s)), divisor


def _values(setting: PerLayer) -> list[tuple[str, int | float]]:
    if setting is None:
        return []
    if isinstance(setting, Mapping):
        return [(str(k), v) for k, v in setting.items()]
    return [("all", setting)]


def _pick(setting: PerLayer, index: int) -> int | float | None:
    if isinstance(setting, Mapping):
        return setting.get(index + 1)
    return setting


def sampling_layers(model: DCGMM) -> list[Layer]:
    """Return the model's layers without a classifier on top (sampling starts below it)."""
    layers: list[Layer] = list(model.layers)  # type: ignore[arg-type]
    while layers and isinstance(layers[-1], LinearClassifier):
        layers.pop()
    if not layers or not isinstance(layers[-1], GMM):
        raise ValueError(f"model {model.spec!r} has no GMM layer on top to start sampling from")
    return layers


def sample(
    model: DCGMM,
    n: int,
    *,
    classes: Tensor | Sequence[int] | None = None,
    config: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    clip: bool = True,
) -> Tensor:
    """Draw ``n`` images from a DCGMM by top-down sampling.

    Unconditional sampling starts at the highest GMM layer with a uniform control signal or
    its mixing weights. With ``classes`` it starts at the classifier layer: a soft one-hot
    target per sample (0.95 on the class) is inverted into a non-negative control signal for
    the GMM layer below (spec §7).

    Parameters
    ----------
    model : DCGMM
        A trained model.
    n : int
        Number of images.
    classes : tensor or sequence of int, optional
        One class per image (length ``n``); needs a classifier layer.
    config : SamplingConfig, optional
        Knobs; the default takes every component mean as is.
    generator : torch.Generator, optional
        Seed it for reproducible samples.
    clip : bool
        Clip the images to [0, 1].

    Returns
    -------
    Tensor, shape (n, H, W, C)
    """
    with torch.no_grad():
        if n <= 0:
            raise ValueError(f"n must be a positive number of samples; got {n}")
        config = config or SamplingConfig()
        config.check_fits(model)
        layers = sampling_layers(model)
        top = layers[-1]
        assert isinstance(top, GMM)
        h, w, k = top.out_shape
        param = top.logits
        if classes is not None:
            control = class_control(model, classes, n)
        elif config.start == "weights":
            control = top.weights.expand(n, h, w, k).to(param.dtype)
        else:
            control = param.new_ones(n, h, w, k)
        x = walk_down(layers, len(layers) - 1, control, config, generator)
        return x.clamp(0.0, 1.0) if clip else x


def class_control(model: DCGMM, classes: Tensor | Sequence[int], n: int) -> Tensor:
    """Return the classifier inversion of soft one-hot targets: the top GMM layer's control."""
    with torch.no_grad():
        classifier = model.classifier
        if classifier is None:
            raise ValueError(
                f"class-conditional sampling needs a classifier layer; model {model.spec!r} has "
                "none (train a spec ending in C(n_classes) with labels)"
            )
        device = classifier.weight.device
        labels = torch.as_tensor(classes, dtype=torch.long, device=device).reshape(-1)
        if labels.shape[0] != n:
            raise ValueError(f"need one class per sample: n={n}, got {labels.shape[0]} classes")
        bad = labels[(labels < 0) | (labels >= classifier.n_classes)]
        if bad.numel():
            raise ValueError(
                f"classes must lie in [0, {classifier.n_classes - 1}] (the classifier layer of "
                f"{model.spec} has {classifier.n_classes} classes); got {sorted(set(bad.tolist()))}"
            )
        target = LinearClassifier.soft_one_hot(
            labels, classifier.n_classes, dtype=classifier.weight.dtype
        )
        return classifier.sample(target)


def walk_down(
    layers: Sequence[Layer],
    start: int,
    control: Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None,
) -> Tensor:
    """Turn ``control`` (the output space of ``layers[start]``) into an input-space tensor.

    Every layer from ``start`` down calls its ``sample``; GMM layers get their per-layer
    knobs, folding and pooling layers are followed by sharpening where configured. A GMM
    layer without noise and the folding below it go down in one pass (:func:`_fold_back`),
    with the images the two ``sample`` calls would give.
    """
    x = control
    index = start
    while index >= 0:
        layer = layers[index]
        if not isinstance(layer, GMM):
            x = _after_sharpening(layers, index, layer.sample(x, generator=generator), config)
            index -= 1
            continue
        top_s, divisor = config.for_layer(index)
        below = layers[index - 1] if index > 0 else None
        if isinstance(below, Folding) and divisor is None:
            folded = _fold_back(layer, below, x, top_s, config, generator)
            if folded is not None:
                x = _after_sharpening(layers, index - 1, folded.to(x.dtype), config)
                index -= 2
                continue
        x = layer.sample(
            x,
            generator=generator,
            top_s=top_s,
            noise_divisor=divisor,
            noise_at_bound=config.noise_at_bound,
            expected=config.mode == "mean",
        )
        index -= 1
    return x


def _fold_back(
    layer: GMM,
    folding: Folding,
    control: Tensor,
    top_s: int | None,
    config: SamplingConfig,
    generator: torch.Generator | None,
) -> Tensor | None:
    """Return the GMM layer's noise-free sample folded back through ``folding``, in one pass.

    The same images as the two ``sample`` calls, without the windows in memory: drawn means
    are read from the table (:meth:`Folding.average_rows`), a shared layer's conditional
    expectation is a transposed convolution (:meth:`Folding.average_mixtures`). ``None``
    where neither applies (an independent layer's expectation).
    """
    if config.mode == "draw":
        rows = layer.component_rows(layer.draw(control, generator=generator, top_s=top_s))
        return folding.average_rows(layer.means, rows)
    if layer.independent:
        return None
    weights = expectation_weights(control, top_s).to(layer.means.dtype)
    return folding.average_mixtures(weights, layer.means)


def _after_sharpening(
    layers: Sequence[Layer], index: int, x: Tensor, config: SamplingConfig
) -> Tensor:
    """Return ``x`` (the input space of ``layers[index]``) sharpened where configured."""
    chain = sharpening_chain(layers, index, config.sharpening)
    if not chain:
        return x
    assert config.sharpening is not None
    return sharpen(chain, x, config.sharpening).values

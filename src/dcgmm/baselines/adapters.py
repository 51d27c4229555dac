"""The baselines behind the common :class:`~dcgmm.interfaces.image_model.ImageModel` interface.

:func:`dcgmm.interfaces.image_model.as_image_model` imports this module only when it is
handed a baseline, so that ``import dcgmm`` loads no baseline.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from dcgmm._validation import check_images
from dcgmm.baselines.data import binarize
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.nsn_layer import GenSettings
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.layers.base import Shape

__all__ = ["LikelihoodReport", "NSNModel", "NSNReport", "VAEModel", "baseline_image_model"]


@dataclass(frozen=True)
class NSNReport:
    """What ``NSNModel.evaluate`` measured: filters and max-component scores per layer."""

    filters: tuple[int, ...]
    max_component: tuple[float, ...]
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Return plain values for JSON."""
        return {"filters": list(self.filters), "max_component": list(self.max_component),
                "n_samples": self.n_samples}  # fmt: skip

    def __str__(self) -> str:
        scores = ", ".join(f"{s:.2f}" for s in self.max_component)
        return (
            f"filters per layer {list(self.filters)}\n"
            f"max-component log-likelihood per layer (a score, not a density): {scores}"
        )


@dataclass(frozen=True)
class LikelihoodReport:
    """What ``VAEModel.evaluate`` measured: the importance-sampled ``-log p(x)``, mean."""

    neg_log_prob: float
    importance_samples: int
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Return plain values for JSON."""
        return {
            "neg_log_prob": self.neg_log_prob,
            "importance_samples": self.importance_samples,
            "n_samples": self.n_samples,
        }

    def __str__(self) -> str:
        return (
            f"-log p(x) = {self.neg_log_prob:.3f} nats on binarised images (importance "
            f"sampling, {self.importance_samples} samples)"
        )


class NSNModel:
    """An :class:`NSN` behind the common interface.

    ``outlier_score`` is the top layer's max-component log-likelihood of its input map (mean
    over positions): a score (spec section 10), not a density. ``sample`` and ``inpaint`` run
    NSN-Gen with ``settings`` (in-painting with ``inpaint_settings``, noise-free by default).
    """

    score_name = "top NSN layer max-component log-likelihood (a score)"
    #: Keyword options of each method beyond the protocol's: none.
    options: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(
        self,
        model: NSN,
        *,
        settings: GenSettings | None = None,
        inpaint_settings: GenSettings | None = None,
    ) -> None:
        self.model = model
        self.settings = settings or GenSettings()
        self.inpaint_settings = inpaint_settings or GenSettings(gamma=0.0)

    @property
    def image_shape(self) -> Shape:
        """``(H, W, C)`` of the model's input."""
        return self.model.input_shape

    def fit(self, images: Tensor, **options: Any) -> "NSNModel":
        """Greedy layer-wise fit; ``options`` go to :meth:`NSN.fit` (``taus`` is required)."""
        check_images(images, self.image_shape, "images")
        self.model.fit(images, **options)
        return self

    @torch.no_grad()
    def outlier_score(self, images: Tensor) -> Tensor:
        """Return the top layer's max-component log-likelihood, mean over positions (N,)."""
        check_images(images, self.image_shape, "images")
        scores = []
        for start in range(0, images.shape[0], 500):
            maps = self.model.maps(images[start : start + 500])
            below = maps[-2] if len(maps) > 1 else images[start : start + 500]
            top = self.model.nsn_layers[-1]
            scores.append(top.max_component_log_likelihood(below).flatten(1).mean(1))
        return torch.cat(scores)

    def prepare(self, images: Tensor) -> Tensor:
        """Return ``images`` as the model takes them (unchanged: the NSN sees pixels)."""
        return images

    @torch.no_grad()
    def evaluate(self, images: Tensor, labels: Tensor | None = None) -> NSNReport:
        """Return every layer's max-component log-likelihood of its input (mean) and filters."""
        check_images(images, self.image_shape, "images")
        inputs = [images, *self.model.maps(images)[:-1]]
        scores = [
            layer.max_component_log_likelihood(h).flatten(1).mean(1).mean().item()
            for layer, h in zip(self.model.nsn_layers, inputs, strict=True)
        ]
        return NSNReport(tuple(self.model.filter_counts()), tuple(scores), images.shape[0])

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """NSN-Gen from top-level noise."""
        return self.model.sample(n, settings=self.settings, generator=generator)

    def inpaint(
        self, images: Tensor, missing: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Occlusion filling through the first layer's map (:meth:`NSN.inpaint`)."""
        check_images(images.masked_fill(missing, 0.0), self.image_shape, "images")
        return self.model.inpaint(images, missing, self.inpaint_settings, generator=generator)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Return the top score vector (N, K_L)."""
        check_images(images, self.image_shape, "images")
        return self.model.embed(images)


class VAEModel:
    """A :class:`DeepLatentGMM` (DLGMM, DLDPMM, Gauss-VAE) behind the common interface.

    The VAE works on flat pixel vectors; the adapter reshapes. ``log_prob`` is the
    importance-sampled estimate with ``n_samples`` samples (a stochastic lower bound that
    tightens as it grows), seeded by ``seed`` so that repeated calls agree. ``binarization``
    (a run's ``{"mode", "seed"}``) says how the training images were binarised:
    :meth:`prepare` binarises new images the same way.
    """

    score_name = "log p(x) (nats, importance sampled)"
    #: Keyword options of each method beyond the protocol's.
    options: ClassVar[Mapping[str, frozenset[str]]] = {"evaluate": frozenset({"n_samples"})}

    def __init__(
        self,
        model: DeepLatentGMM,
        image_shape: Shape,
        *,
        n_samples: int = 50,
        seed: int = 0,
        inpaint_iters: int = 20,
        binarization: Mapping[str, Any] | None = None,
    ) -> None:
        h, w, c = image_shape
        if h * w * c != model.n_inputs:
            raise ValueError(
                f"image_shape {image_shape} has {h * w * c} pixels; the model takes "
                f"{model.n_inputs}"
            )
        self.model = model
        self._image_shape = image_shape
        self.n_samples = n_samples
        self.seed = seed
        self.inpaint_iters = inpaint_iters
        self.binarization = binarization

    @property
    def image_shape(self) -> Shape:
        """``(H, W, C)`` of the model's input."""
        return self._image_shape

    def _flat(self, images: Tensor, missing: Tensor | None = None) -> Tensor:
        known = images if missing is None else images.masked_fill(missing, 0.0)
        check_images(known, self.image_shape, "images")
        return images.reshape(images.shape[0], -1)

    def fit(self, images: Tensor, **options: Any) -> "VAEModel":
        """Adam with early stopping; ``options`` go to :meth:`DeepLatentGMM.fit`."""
        val = options.pop("val", None)
        self.model.fit(self._flat(images), val=None if val is None else self._flat(val), **options)
        return self

    def prepare(self, images: Tensor) -> Tensor:
        """Return ``images`` as the model saw its training data: binarised, if it was.

        ``binarization`` (``{"mode", "seed"}``, as a run records it) gives the mode; the
        draw uses ``seed + 1``, a fresh draw for data the model did not train on.
        """
        if self.binarization is None:
            return images
        mode, seed = self.binarization["mode"], int(self.binarization["seed"])
        return binarize(images, mode, seed + 1).reshape(images.shape)

    @torch.no_grad()
    def evaluate(
        self, images: Tensor, labels: Tensor | None = None, *, n_samples: int | None = None
    ) -> LikelihoodReport:
        """Return the mean importance-sampled ``-log p(x)`` (``n_samples`` per image)."""
        n_samples = n_samples or self.n_samples
        flat = self._flat(images)
        generator, total = torch.Generator().manual_seed(self.seed), 0.0
        for i in range(0, flat.shape[0], 100):
            lp = self.model.log_prob(flat[i : i + 100], n_samples=n_samples, generator=generator)
            total += float(lp.sum())
        return LikelihoodReport(-total / flat.shape[0], n_samples, flat.shape[0])

    def log_prob(self, images: Tensor) -> Tensor:
        """Importance-sampled ``log p(x)`` per image (N,), in nats."""
        generator = torch.Generator().manual_seed(self.seed)
        return self.model.log_prob(
            self._flat(images), n_samples=self.n_samples, generator=generator
        )

    def outlier_score(self, images: Tensor) -> Tensor:
        """``log_prob``."""
        return self.log_prob(images)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Pixel probabilities of prior draws, as images."""
        return self.model.sample(n, generator=generator).reshape(n, *self.image_shape)

    def inpaint(
        self, images: Tensor, missing: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Pseudo-Gibbs completion (:meth:`DeepLatentGMM.inpaint`)."""
        flat = self._flat(images, missing)
        filled = self.model.inpaint(
            flat,
            missing.expand_as(images).reshape(flat.shape),
            n_iters=self.inpaint_iters,
            generator=generator,
        )
        return filled.reshape(images.shape)

    def embed(self, images: Tensor) -> Tensor:
        """Return the mean of the most probable component's posterior (N, d)."""
        return self.model.embed(self._flat(images), mode="argmax_component_mean")


def baseline_image_model(model: object, **options: Any) -> "NSNModel | VAEModel":
    """Wrap an NSN or a VAE in its adapter (``options`` go to the adapter).

    A VAE needs ``image_shape=``; by default a square single-channel image is assumed when the
    pixel count is a square number.
    """
    if isinstance(model, NSN):
        return NSNModel(model, **options)
    if isinstance(model, DeepLatentGMM):
        if "image_shape" not in options:
            side = round(model.n_inputs**0.5)
            if side * side != model.n_inputs:
                raise ValueError(
                    f"cannot guess the image shape of {model.n_inputs} pixels; pass image_shape="
                )
            options["image_shape"] = (side, side, 1)
        return VAEModel(model, **options)
    raise TypeError(f"no image-model adapter for {type(model).__name__}")

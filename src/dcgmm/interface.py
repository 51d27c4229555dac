"""One interface for every image model of the library: what the evaluation harness calls.

DCGMM, the NSN and the three VAEs have their own native APIs (a DCGMM is trained by a
``Trainer`` and sampled by ``dcgmm.sampling``; the VAEs work on flat vectors; the NSN on its
maps). The harness needs one shape of model, so each is wrapped in an adapter that speaks
NHWC images in [0, 1]:

* :class:`ImageModel` -- ``fit``, ``outlier_score`` (higher means more typical), ``sample``,
  ``inpaint``, ``embed``;
* :class:`DensityModel` -- an ``ImageModel`` that also has a normalised ``log_prob`` (nats per
  image). Only the VAEs and a flat GMM (``F(H,1)-G(K)``) are; a deep DCGMM's top-layer
  log-likelihood and the NSN's max-component score rank images but are not densities, so
  their adapters do not pretend to be.

:func:`as_image_model` picks the adapter. The models stay reachable as ``adapter.model``.
"""

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from dcgmm._validation import check_images
from dcgmm.baselines.nsn import NSN, GenSettings
from dcgmm.baselines.vae import DeepLatentGMM
from dcgmm.inpainting import inpaint
from dcgmm.layers.base import Shape
from dcgmm.layers.folding import Folding
from dcgmm.layers.gmm import GMM
from dcgmm.model import DCGMM
from dcgmm.outliers import sample_scores
from dcgmm.sampling import SamplingConfig, sample
from dcgmm.training import TrainConfig, Trainer


@runtime_checkable
class ImageModel(Protocol):
    """A model of images ``(N, H, W, C)`` in [0, 1], as the evaluation harness sees it."""

    #: What ``outlier_score`` returns, in words (for tables and plots).
    score_name: str

    @property
    def image_shape(self) -> Shape:
        """``(H, W, C)`` of the images the model takes."""
        ...

    def fit(self, images: Tensor, **options: Any) -> "ImageModel":
        """Train on ``images`` (the model's own procedure and options); return self."""
        ...

    def outlier_score(self, images: Tensor) -> Tensor:
        """One score per image (N,); higher means more typical of the training data."""
        ...

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` images (n, H, W, C) in [0, 1]."""
        ...

    def inpaint(
        self, images: Tensor, missing: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Fill the pixels where ``missing`` is True; known pixels come back unchanged."""
        ...

    def embed(self, images: Tensor) -> Tensor:
        """One feature vector per image (N, D), e.g. for kNN classification."""
        ...


@runtime_checkable
class DensityModel(ImageModel, Protocol):
    """An :class:`ImageModel` with a normalised density over images."""

    def log_prob(self, images: Tensor) -> Tensor:
        """``log p(x)`` per image (N,), in nats."""
        ...


class DCGMMModel:
    """A :class:`DCGMM` behind the common interface.

    Parameters
    ----------
    model : DCGMM
    sampling : SamplingConfig, optional
        How ``sample`` draws (default: :class:`SamplingConfig` defaults).
    inpainting : SamplingConfig, optional
        How ``inpaint`` fills; default ``mode="mean"``, the conditional expectation (the
        squared-error-optimal completion of one GMM layer).
    layer : int, optional
        1-based index of the GMM layer that scores outliers; default the top one.
    """

    score_name = "top GMM layer log-likelihood (mean over positions)"

    def __init__(
        self,
        model: DCGMM,
        *,
        sampling: SamplingConfig | None = None,
        inpainting: SamplingConfig | None = None,
        layer: int | None = None,
    ) -> None:
        self.model = model
        self.sampling = sampling or SamplingConfig()
        self.inpainting = inpainting or SamplingConfig(mode="mean")
        self.layer = layer

    @property
    def image_shape(self) -> Shape:
        """``(H, W, C)`` of the model's input."""
        return self.model.input_shape

    def fit(self, images: Tensor, **options: Any) -> "DCGMMModel":
        """Train with a :class:`Trainer`; ``options`` are :class:`TrainConfig` fields.

        ``labels=`` (needed with a classifier layer) and ``run_dir=`` pass to the trainer.
        """
        labels = options.pop("labels", None)
        run_dir = options.pop("run_dir", None)
        Trainer(self.model, TrainConfig(**options), images, labels, run_dir=run_dir).run()
        return self

    def outlier_score(self, images: Tensor) -> Tensor:
        """Return the chosen GMM layer's exact log-likelihood, mean over its positions (N,)."""
        return sample_scores(self.model, images, layer=self.layer)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Top-down samples with the adapter's :class:`SamplingConfig`."""
        return sample(self.model, n, config=self.sampling, generator=generator)

    def inpaint(
        self, images: Tensor, missing: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """:func:`dcgmm.inpainting.inpaint` with the adapter's in-painting config."""
        return inpaint(self.model, images, missing, config=self.inpainting, generator=generator)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Return the top GMM layer's responsibilities, flattened (N, H_top * W_top * K)."""
        self.model.check_input(images, "images")
        index, _ = list(self.model.gmm_layers())[-1]
        h = images
        for layer in list(self.model.layers)[: index + 1]:
            h = layer(h)
        return h.reshape(h.shape[0], -1)


def is_flat_gmm(model: DCGMM) -> bool:
    """Whether ``model`` is one GMM over whole images: ``F(H,W)-G(K)`` (+ a classifier)."""
    layers = list(model.layers)
    if len(layers) < 2 or not isinstance(layers[0], Folding) or not isinstance(layers[1], GMM):
        return False
    return layers[0].out_shape[:2] == (1, 1)


class FlatGMMModel(DCGMMModel):
    """A flat GMM (``F(H,W)-G(K)``): its one position's log-likelihood is ``log p(x)``."""

    score_name = "log p(x) (nats)"

    def __init__(self, model: DCGMM, **kwargs: Any) -> None:
        if not is_flat_gmm(model):
            raise ValueError(
                f"{model.spec!r} is not a flat GMM; a flat GMM folds the whole image into one "
                "position first, e.g. 'F(28,1)-G(49)'. Use DCGMMModel for deep models."
            )
        super().__init__(model, **kwargs)

    def log_prob(self, images: Tensor) -> Tensor:
        """``log p(x)`` per image (N,), in nats."""
        return self.outlier_score(images)


class NSNModel:
    """An :class:`NSN` behind the common interface.

    ``outlier_score`` is the top layer's max-component log-likelihood of its input map (mean
    over positions): a score (spec section 10), not a density. ``sample`` and ``inpaint`` run
    NSN-Gen with ``settings`` (in-painting with ``inpaint_settings``, noise-free by default).
    """

    score_name = "top NSN layer max-component log-likelihood (a score)"

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
    tightens as it grows), seeded by ``seed`` so that repeated calls agree.
    """

    score_name = "log p(x) (nats, importance sampled)"

    def __init__(
        self,
        model: DeepLatentGMM,
        image_shape: Shape,
        *,
        n_samples: int = 50,
        seed: int = 0,
        inpaint_iters: int = 20,
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


def as_image_model(model: object, **options: Any) -> ImageModel:
    """Wrap ``model`` in its adapter; ``options`` go to the adapter's constructor.

    A VAE needs ``image_shape=``; by default a square single-channel image is assumed when the
    pixel count is a square number.
    """
    if isinstance(model, DCGMM):
        return (
            FlatGMMModel(model, **options) if is_flat_gmm(model) else DCGMMModel(model, **options)
        )
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
    if isinstance(model, ImageModel):
        return model
    raise TypeError(
        f"no image-model adapter for {type(model).__name__}; expected a DCGMM, NSN or "
        "DeepLatentGMM, or an object with fit/outlier_score/sample/inpaint/embed"
    )

"""One interface for every image model of the library: what the evaluation harness calls.

DCGMM, the NSN and the three VAEs have their own native APIs (a DCGMM is trained by a
``Trainer`` and sampled by ``dcgmm.generation.sampling``; the VAEs work on flat vectors; the
NSN on its maps). The harness needs one shape of model, so each is wrapped in an adapter that speaks
NHWC images in [0, 1]:

* :class:`ImageModel` -- ``fit``, ``outlier_score`` (higher means more typical), ``sample``,
  ``inpaint``, ``embed``;
* :class:`DensityModel` -- an ``ImageModel`` that also has a normalised ``log_prob`` (nats per
  image). Only the VAEs and a flat GMM (``F(H,1)-G(K)``) are; a deep DCGMM's top-layer
  log-likelihood and the NSN's max-component score rank images but are not densities, so
  their adapters do not pretend to be.

:func:`as_image_model` picks the adapter. The models stay reachable as ``adapter.model``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from dcgmm.evaluation.clustering import clustering_scores
from dcgmm.evaluation.outliers import sample_scores
from dcgmm.evaluation.scores import Evaluation, evaluate
from dcgmm.generation.inpainting import inpaint
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.layers.base import Shape
from dcgmm.layers.folding import Folding
from dcgmm.layers.gmm import GMM
from dcgmm.model import DCGMM
from dcgmm.training.config import TrainConfig
from dcgmm.training.trainer import Trainer

__all__ = [
    "DCGMMModel",
    "DensityModel",
    "FlatGMMModel",
    "ImageModel",
    "as_image_model",
    "is_flat_gmm",
]


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
    #: Keyword options of each method beyond the protocol's (a command's flags map onto them).
    options: ClassVar[Mapping[str, frozenset[str]]] = {
        "sample": frozenset({"config", "classes"}),
        "inpaint": frozenset({"config", "layer"}),
        "evaluate": frozenset({"clustering"}),
        "outliers": frozenset(
            {
                "kind",
                "layer",
                "map_layer",
                "c",
                "all_layers",
                "contrast",
                "stats_limit",
                "stats_data",
            }
        ),
        "to": frozenset({"device"}),
    }

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

    def to(self, device: str | torch.device) -> "DCGMMModel":
        """Move the model to ``device``; return self."""
        self.model.to(device)
        return self

    def prepare(self, images: Tensor) -> Tensor:
        """Return ``images`` on the model's device (a DCGMM takes pixels in [0, 1] as they are)."""
        device = next(self.model.parameters(), images).device
        return images.to(device)

    def evaluate(
        self, images: Tensor, labels: Tensor | None = None, *, clustering: int = 0
    ) -> Evaluation:
        """Return :func:`dcgmm.evaluation.scores.evaluate`'s scores of ``images``.

        With ``clustering`` N, also the top layer's clustering indices on the first N images.
        """
        result = evaluate(self.model, images, labels)
        if clustering:
            scores = clustering_scores(self.model, images[:clustering])
            result = dataclasses.replace(result, clustering=scores)
        return result

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        config: SamplingConfig | None = None,
        classes: Tensor | None = None,
    ) -> Tensor:
        """Draw top-down samples with ``config`` (default the adapter's :class:`SamplingConfig`).

        ``classes`` (n,) draws class-conditionally (a classifier layer is needed).
        """
        config = config or self.sampling
        return sample(self.model, n, classes=classes, config=config, generator=generator)

    def inpaint(
        self,
        images: Tensor,
        missing: Tensor,
        *,
        generator: torch.Generator | None = None,
        config: SamplingConfig | None = None,
        layer: int | None = None,
    ) -> Tensor:
        """Fill ``missing`` by :func:`dcgmm.generation.inpainting.inpaint`.

        It reads GMM layer ``layer`` (default the top) and walks down with ``config`` (default
        the adapter's in-painting config).
        """
        config = config or self.inpainting
        return inpaint(self.model, images, missing, layer=layer, config=config,
                       generator=generator)  # fmt: skip

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


def as_image_model(model: object, **options: Any) -> ImageModel:
    """Wrap ``model`` in its adapter; ``options`` go to the adapter's constructor.

    A VAE needs ``image_shape=``; by default a square single-channel image is assumed when the
    pixel count is a square number.
    """
    if isinstance(model, DCGMM):
        return (
            FlatGMMModel(model, **options) if is_flat_gmm(model) else DCGMMModel(model, **options)
        )
    if type(model).__module__.startswith("dcgmm.baselines."):
        # Imported here, not at the top: `import dcgmm` loads no baseline.
        from dcgmm.baselines.adapters import baseline_image_model

        return baseline_image_model(model, **options)
    if isinstance(model, ImageModel):
        return model
    raise TypeError(
        f"no image-model adapter for {type(model).__name__}; expected a DCGMM, NSN or "
        "DeepLatentGMM, or an object with fit/outlier_score/sample/inpaint/embed"
    )

"""Layer-contrast outlier scores: an upper GMM layer's verdict on an image against a lower one's.

A likelihood is dominated by low-level statistics: on Fashion-MNIST, preset B's lower GMM layer
finds the T-shirts of class 0 *more* typical than the inlier classes (per-layer AUC about 0.45,
below chance), which drags the top layer's score down with it. Contrasting the levels of a
hierarchy is the remedy of likelihood-ratio detectors (hierarchical VAEs: Havtorn et al.,
ICML 2021; a general-domain reference model: Schirrmeister et al., NeurIPS 2020). A DCGMM is
such a hierarchy, so the contrast needs no second model:

    score(x) = z_upper(x) - z_lower(x),   z_l(x) = (s_l(x) - mean_l) / std_l,

with s_l the layer's per-image score (its per-position log-likelihoods averaged, as
:func:`~dcgmm.evaluation.outliers.sample_scores`) and mean_l, std_l taken over *training*
images. Standardising puts the two layers' nats on one scale, so the rule has no weight to
tune. Higher is more typical, as for every score here.

This is our scoring rule, not the 2022 paper's (which scores with the top layer alone); the
reproduction pages name it wherever it is used.
"""

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from dcgmm.evaluation.outliers import ScoreKind, position_scores
from dcgmm.model import DCGMM

__all__ = ["LayerContrast", "fit_layer_contrast"]


@dataclass(frozen=True)
class LayerContrast:
    """A fitted layer-contrast score (see the module docstring).

    Attributes
    ----------
    upper, lower : int
        The two GMM layers' 1-based numbers (as in ``dcgmm info``), ``upper > lower``.
    kind : str
        The per-position score both layers use (``"loglik"``, ...).
    mean, std : tuple of float
        Training mean and standard deviation of (upper, lower)'s per-image scores.
    n_samples : int
        Training images the statistics come from.
    """

    upper: int
    lower: int
    kind: ScoreKind
    mean: tuple[float, float]
    std: tuple[float, float]
    n_samples: int

    def scores(self, model: DCGMM, images: Tensor, *, batch_size: int = 500) -> Float[Tensor, " N"]:
        """Return ``z_upper - z_lower`` per image, float64 on CPU (higher: more typical)."""
        layers = (self.upper, self.lower)
        return self.combine(*_layer_scores(model, images, layers, self.kind, batch_size))

    def combine(self, upper: Tensor, lower: Tensor) -> Tensor:
        """Return the contrast of per-image scores already at hand, float64.

        ``upper`` and ``lower`` are the two layers' per-image scores of this contrast's kind
        (each layer's mean over its positions), as
        :func:`~dcgmm.evaluation.outlier_detection.detect_outliers` has them.
        """
        upper, lower = upper.double(), lower.double()
        return (upper - self.mean[0]) / self.std[0] - (lower - self.mean[1]) / self.std[1]


def fit_layer_contrast(
    model: DCGMM,
    images: Tensor,
    *,
    upper: int | str | None = None,
    lower: int | str | None = None,
    kind: ScoreKind = "loglik",
    batch_size: int = 500,
) -> LayerContrast:
    """Fit the contrast of GMM layers ``upper`` and ``lower`` on training ``images``.

    ``upper`` defaults to the top GMM layer, ``lower`` to the highest GMM layer below
    ``upper``; ``images`` are (N, H, W, C), pixels in [0, 1].
    """
    numbers = model.gmm_layer_numbers()
    top = model.gmm_layer_number(upper)
    below = [n for n in numbers if n < top]
    if not below:
        raise ValueError(
            f"a layer contrast needs a GMM layer below layer {top}; {model.spec} has GMM "
            f"layers {numbers}. Hint: a model with one GMM layer has nothing to contrast"
        )
    bottom = below[-1] if lower is None else model.gmm_layer_number(lower)
    if bottom >= top:
        raise ValueError(
            f"the lower layer must lie below the upper one; got lower {bottom}, upper {top} "
            f"(GMM layers of {model.spec}: {numbers})"
        )
    if images.shape[0] < 2:
        raise ValueError(f"need at least 2 images to estimate a spread; got {images.shape[0]}")
    values = _layer_scores(model, images, (top, bottom), kind, batch_size)
    std = tuple(float(v.std()) for v in values)
    if min(std) <= 0.0:
        raise ValueError(
            f"the training scores of layer {top} or {bottom} do not vary (std {std}); the "
            "contrast cannot standardise them. Hint: fit it on more than one distinct image"
        )
    mean = tuple(float(v.mean()) for v in values)
    return LayerContrast(top, bottom, kind, (mean[0], mean[1]), (std[0], std[1]), len(images))


def _layer_scores(
    model: DCGMM, images: Tensor, layers: tuple[int, int], kind: ScoreKind, batch_size: int
) -> tuple[Tensor, Tensor]:
    """Return the two layers' per-image scores, float64: each layer's mean over positions."""
    maps = position_scores(model, images, kind=kind, batch_size=batch_size)
    upper, lower = (maps[n].flatten(1).double().mean(1) for n in layers)
    return upper, lower

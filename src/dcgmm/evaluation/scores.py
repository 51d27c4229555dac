"""Per-layer density scores and classifier accuracy of a DCGMM over a whole dataset."""

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dcgmm.model import DCGMM

__all__ = ["Evaluation", "LayerScores", "evaluate", "format_scores"]


@dataclass(frozen=True)
class LayerScores:
    """One GMM layer's mean per-sample scores (nats, higher is better).

    Attributes
    ----------
    index : int
        The layer's number, 1-based over all layers (as in error messages and ``dcgmm info``).
    spec : str
        The layer's spec, e.g. ``"G(25)"``.
    annealed, max_component, loglik : float
        The annealed training objective, the max-component and the exact log-likelihood.
    """

    index: int
    spec: str
    annealed: float
    max_component: float
    loglik: float


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` measured: every GMM layer's scores and the classifier accuracy.

    ``classifier_accuracy`` is a fraction in [0, 1], or None without a classifier or labels.
    """

    layers: tuple[LayerScores, ...]
    classifier_accuracy: float | None
    n_samples: int
    #: The top layer's clustering indices (:func:`dcgmm.evaluation.clustering.clustering_scores`),
    #: when they were asked for.
    clustering: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return plain values for JSON: ``{"layers": [{...}, ...], ...}``."""
        result: dict[str, Any] = {
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "classifier_accuracy": self.classifier_accuracy,
            "n_samples": self.n_samples,
        }
        if self.clustering is not None:
            result["clustering"] = self.clustering
        return result

    def __str__(self) -> str:
        return format_scores(self)


@torch.no_grad()
def evaluate(
    model: DCGMM, images: Tensor, labels: Tensor | None = None, *, batch_size: int = 500
) -> Evaluation:
    """Return mean per-sample scores of every GMM layer and the classifier accuracy.

    Per sample, each score is the mean over the layer's positions of (a) the annealed training
    objective, (b) the max-component log-likelihood and (c) the exact log-likelihood
    ``log sum_k pi_k N_k``; the result holds their means over samples (nats, higher is
    better), one :class:`LayerScores` per GMM layer (``Evaluation.to_dict()`` for JSON).
    """
    model.check_input(images, "images")
    if images.shape[0] == 0:
        raise ValueError("images is empty; expected at least one image to evaluate")
    device = next(model.parameters()).device
    gmm_layers = list(model.gmm_layers())
    # Sums stay on the device; one transfer at the end (no sync per batch on a GPU).
    totals = torch.zeros(len(gmm_layers), 3, dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        for row, scores in enumerate(model.scores(x)):
            for col, value in enumerate(scores):
                totals[row, col] += value.flatten(1).mean(1).double().sum()
        if model.classifier is not None and labels is not None:
            predicted = model.predict_proba(x).argmax(1)
            correct += (predicted == labels[start : start + batch_size].to(device)).sum()
    n = images.shape[0]
    means = (totals / n).tolist()
    layers = tuple(
        LayerScores(idx + 1, gmm.spec, row[0], row[1], row[2])
        for (idx, gmm), row in zip(gmm_layers, means, strict=True)
    )
    has_accuracy = model.classifier is not None and labels is not None
    return Evaluation(layers, int(correct) / n if has_accuracy else None, n)


def format_scores(result: Evaluation) -> str:
    """Return an aligned text table of :func:`evaluate`'s result."""
    lines = [f"{'layer':>5}  {'spec':<12} {'annealed':>12} {'max_comp':>12} {'loglik':>12}"]
    for row in result.layers:
        lines.append(
            f"{row.index:>5}  {row.spec:<12} {row.annealed:>12.3f} "
            f"{row.max_component:>12.3f} {row.loglik:>12.3f}"
        )
    if result.classifier_accuracy is not None:
        lines.append(f"classifier accuracy: {100 * result.classifier_accuracy:.2f}%")
    lines.append(f"samples: {result.n_samples}  (nats per sample, mean over positions)")
    if result.clustering is not None:
        c = result.clustering
        lines.append(
            f"top-layer clustering of the first {c['n_samples']} samples: Dunn index "
            f"{c['dunn']:.4f} (higher is better), Davies-Bouldin {c['davies_bouldin']:.3f} "
            f"(lower is better), {c['n_clusters_used']} components used"
        )
    return "\n".join(lines)

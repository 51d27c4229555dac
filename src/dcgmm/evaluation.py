"""Per-layer density scores and classifier accuracy of a DCGMM over a whole dataset."""

from typing import Any

import torch
from torch import Tensor

from dcgmm.model import DCGMM


@torch.no_grad()
def evaluate(
    model: DCGMM, images: Tensor, labels: Tensor | None = None, *, batch_size: int = 500
) -> dict[str, Any]:
    """Return mean per-sample scores of every GMM layer and the classifier accuracy.

    Per sample, each score is the mean over the layer's positions of (a) the annealed training
    objective, (b) the max-component log-likelihood and (c) the exact log-likelihood
    ``log sum_k pi_k N_k``; the dict holds their means over samples (nats, higher is better).

    Returns
    -------
    dict
        ``{"layers": [{"index", "spec", "annealed", "max_component", "loglik"}, ...],
        "classifier_accuracy": float or None, "n_samples": int}``; ``index`` is 1-based
        over all layers, as in error messages and ``dcgmm info``.
    """
    model.check_input(images, "images")
    if images.shape[0] == 0:
        raise ValueError("images is empty; expected at least one image to evaluate")
    device = next(model.parameters()).device
    gmm_indices = [i for i, _ in model.gmm_layers()]
    # Sums stay on the device; one transfer at the end (no sync per batch on a GPU).
    totals = torch.zeros(len(gmm_indices), 3, dtype=torch.float64, device=device)
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
    layers = [
        {
            "index": idx + 1,
            "spec": model.layers[idx].spec,
            "annealed": row[0],
            "max_component": row[1],
            "loglik": row[2],
        }
        for idx, row in zip(gmm_indices, means, strict=True)
    ]
    has_accuracy = model.classifier is not None and labels is not None
    return {
        "layers": layers,
        "classifier_accuracy": int(correct) / n if has_accuracy else None,
        "n_samples": n,
    }


def format_scores(result: dict[str, Any]) -> str:
    """Return an aligned text table of :func:`evaluate`'s result."""
    lines = [f"{'layer':>5}  {'spec':<12} {'annealed':>12} {'max_comp':>12} {'loglik':>12}"]
    for row in result["layers"]:
        lines.append(
            f"{row['index']:>5}  {row['spec']:<12} {row['annealed']:>12.3f} "
            f"{row['max_component']:>12.3f} {row['loglik']:>12.3f}"
        )
    if result["classifier_accuracy"] is not None:
        lines.append(f"classifier accuracy: {100 * result['classifier_accuracy']:.2f}%")
    lines.append(f"samples: {result['n_samples']}  (nats per sample, mean over positions)")
    return "\n".join(lines)

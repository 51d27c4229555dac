"""Clustering quality of a GMM layer's hard assignments: Dunn index and Davies-Bouldin score.

The 2021 paper judges the top layer as a clustering: every image goes to the component with the
highest responsibility, and the clusters are measured in the space that layer models (its
input, flattened; for preset A the pixels). Both indices use Euclidean distances, in float64.

* Dunn index (higher is better): the smallest distance between two points of different
  clusters divided by the largest distance between two points of one cluster.
* Davies-Bouldin score (lower is better): the mean over clusters i of
  ``max_{j != i} (s_i + s_j) / ||c_i - c_j||``, with ``c_i`` the cluster's centroid and ``s_i``
  the mean distance of its points to it (the definition scikit-learn also uses).

Components that receive no point are left out; both need at least two non-empty clusters.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from dcgmm.layers import GMM
from dcgmm.model import DCGMM

__all__ = ["clustering_scores", "davies_bouldin", "dunn_index", "layer_assignments"]

# Rows per block of the pairwise distance matrix (keeps the Dunn index at O(block * N) memory).
_BLOCK = 1024


def _check(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"need features (N, D) and labels (N,); got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    _, compact = torch.unique(labels, return_inverse=True)
    if int(compact.max()) < 1:
        raise ValueError("clustering indices need at least two non-empty clusters; got one")
    return features.double(), compact


def davies_bouldin(features: Float[Tensor, "N D"], labels: Int[Tensor, " N"]) -> float:
    """Return the Davies-Bouldin score of ``labels`` on ``features`` (lower is better)."""
    x, lab = _check(features, labels)
    n_clusters = int(lab.max()) + 1
    counts = torch.bincount(lab, minlength=n_clusters).double()
    centroids = torch.zeros(n_clusters, x.shape[1], dtype=torch.float64).index_add_(0, lab, x)
    centroids /= counts[:, None]
    spread = torch.zeros(n_clusters, dtype=torch.float64).index_add_(
        0, lab, (x - centroids[lab]).norm(dim=1)
    )
    spread /= counts
    separation = torch.cdist(centroids, centroids)
    ratio = (spread[:, None] + spread[None, :]) / separation
    ratio.fill_diagonal_(float("-inf"))
    return float(ratio.max(dim=1).values.mean())


def dunn_index(features: Float[Tensor, "N D"], labels: Int[Tensor, " N"]) -> float:
    """Return the Dunn index of ``labels`` on ``features`` (higher is better); O(N^2) time."""
    x, lab = _check(features, labels)
    nearest_between = torch.tensor(float("inf"), dtype=torch.float64)
    widest_within = torch.tensor(0.0, dtype=torch.float64)
    for start in range(0, x.shape[0], _BLOCK):
        d = torch.cdist(x[start : start + _BLOCK], x)
        same = lab[start : start + _BLOCK, None] == lab[None, :]
        widest_within = torch.maximum(widest_within, d[same].max())
        if bool((~same).any()):
            nearest_between = torch.minimum(nearest_between, d[~same].min())
    if float(widest_within) == 0.0:
        return float("inf")  # every cluster is a single point (or identical points)
    return float(nearest_between / widest_within)


@torch.no_grad()
def layer_assignments(
    model: DCGMM, images: Tensor, *, batch_size: int = 500
) -> tuple[Tensor, Tensor]:
    """Return ``(features, labels)`` of the top GMM layer: its flattened input and argmax.

    The top layer must have a single position (true of every preset: the last folding covers
    the whole map), so that one image is one point of the clustering.
    """
    model.check_input(images, "images")
    index, top = list(model.gmm_layers())[-1]
    if top.input_shape[0] * top.input_shape[1] != 1:
        raise ValueError(
            f"the top GMM layer of {model.spec} has {top.input_shape[0]}x{top.input_shape[1]} "
            "positions; clustering indices need one point per image (a 1x1 top layer)"
        )
    device = next(model.parameters()).device
    features, labels = [], []
    for start in range(0, images.shape[0], batch_size):
        h = images[start : start + batch_size].to(device)
        for layer in list(model.layers)[:index]:
            h = layer(h)
        assert isinstance(top, GMM)
        labels.append(top.log_joint(h).argmax(-1).reshape(-1).cpu())
        features.append(h.reshape(h.shape[0], -1).cpu())
    return torch.cat(features), torch.cat(labels)


def clustering_scores(model: DCGMM, images: Tensor, *, batch_size: int = 500) -> dict[str, float]:
    """Return the Dunn index, Davies-Bouldin score and cluster count of the top layer."""
    features, labels = layer_assignments(model, images, batch_size=batch_size)
    return {
        "dunn": dunn_index(features, labels),
        "davies_bouldin": davies_bouldin(features, labels),
        "n_clusters_used": int(torch.unique(labels).numel()),
        "n_samples": int(labels.numel()),
    }

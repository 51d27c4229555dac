"""Outlier detection with a trained DCGMM: per-sample scores, ROC/AUC, per-position maps.

Per-sample score of a GMM layer (spec §4): the mean over the layer's positions of a
per-position log-density; a low score means an unusual image. The 2022 paper's protocol uses
the top layer and the ROC of inliers (positive class, high scores) against outliers.

Per-position maps follow the 2021 paper's rule: position p of layer l is an inlier when its
log-likelihood L_p satisfies ``L_p >= mean_p - c * std_p``, with the mean and standard
deviation over *training* images, collected once (:func:`fit_position_statistics`) and stored
beside the model in the run directory (:func:`save_position_statistics`).

Layers are named by their 1-based index in the spec, as in ``dcgmm info`` and ``dcgmm eval``.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from dcgmm.exceptions import CheckpointError
from dcgmm.io.run_files import read_verified_safetensors, write_verified_safetensors
from dcgmm.layers import GMM, Folding, MaxPooling
from dcgmm.model import DCGMM

__all__ = [
    "DEFAULT_C",
    "SCORE_KINDS",
    "STATISTICS_FILE",
    "PositionStatistics",
    "ScoreKind",
    "Scores",
    "fit_position_statistics",
    "load_position_statistics",
    "position_scores",
    "roc_auc",
    "roc_curve",
    "sample_scores",
    "save_position_statistics",
    "to_pixels",
]

# Scores as a tensor, an array or a plain sequence of numbers (one per image).
Scores = Tensor | np.ndarray | Sequence[float]

ScoreKind = Literal["loglik", "max_component", "annealed"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("loglik", "max_component", "annealed")
STATISTICS_FILE = "outlier_statistics.safetensors"
# The threshold's default width: a position is flagged when its log-likelihood lies more than
# two training standard deviations below the training mean. The 2021 paper leaves c open.
DEFAULT_C = 2.0


def position_scores(
    model: DCGMM,
    images: Tensor,
    *,
    kind: ScoreKind = "loglik",
    batch_size: int = 500,
) -> dict[int, Tensor]:
    """Return every GMM layer's per-position scores, ``{layer index: (N, H_l, W_l)}``, on CPU.

    ``images`` is ``(N, H, W, C)``, float, pixels in [0, 1]; it is checked with
    :meth:`DCGMM.check_input`, so it carries no jaxtyping annotation. ``kind`` picks the exact
    log-likelihood (default), the max-component log-likelihood or the annealed training
    objective; all in nats.
    """
    with torch.no_grad():
        if kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {SCORE_KINDS}; got {kind!r}")
        model.check_input(images, "images")
        device = next(model.parameters()).device
        column = SCORE_KINDS.index(kind)
        numbers = model.gmm_layer_numbers()
        parts: dict[int, list[Tensor]] = {n: [] for n in numbers}
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            # GMMScores is (annealed, max_component, loglik): reorder to SCORE_KINDS' order.
            for number, scores in zip(numbers, model.scores(batch), strict=True):
                value = (scores.loglik, scores.max_component, scores.annealed)[column]
                parts[number].append(value.cpu())
        return {n: torch.cat(chunks) for n, chunks in parts.items()}


def sample_scores(
    model: DCGMM,
    images: Tensor,
    *,
    layer: int | str | None = None,
    kind: ScoreKind = "loglik",
    batch_size: int = 500,
) -> Float[Tensor, " N"]:
    """Return one score per image: GMM layer ``layer``'s mean over positions (default: top)."""
    number = model.gmm_layer_number(layer)
    maps = position_scores(model, images, kind=kind, batch_size=batch_size)
    return maps[number].flatten(1).mean(1)


def _as_float64(scores: Scores, name: str) -> np.ndarray:
    array = scores.detach().cpu().double().numpy() if isinstance(scores, Tensor) else scores
    array = np.asarray(array, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty; ROC analysis needs at least one score of each kind")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite scores; check the model and the data")
    return array


def roc_curve(
    inlier_scores: Scores, outlier_scores: Scores
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(false_positive_rate, true_positive_rate, thresholds)`` of "inlier if >= t".

    Inliers are the positive class: a high score means "looks like the training data". One
    point per distinct score (tied scores move both rates at once), from (0, 0) to (1, 1).
    """
    pos = _as_float64(inlier_scores, "inlier_scores")
    neg = _as_float64(outlier_scores, "outlier_scores")
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="stable")
    scores, is_pos = scores[order], is_pos[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(is_pos)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / pos.size]
    fpr = np.r_[0.0, fp / neg.size]
    thresholds = np.r_[np.inf, scores[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(inlier_scores: Scores, outlier_scores: Scores) -> float:
    """Return the area under the ROC curve: P(inlier score > outlier score), ties count half.

    Computed from ranks (the Mann-Whitney U statistic) in float64.
    """
    pos = _as_float64(inlier_scores, "inlier_scores")
    neg = _as_float64(outlier_scores, "outlier_scores")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.arange(1, scores.size + 1, dtype=np.float64)
    # Tied scores share the mean of their ranks.
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], scores.size]
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:
            ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


@dataclass(frozen=True)
class PositionStatistics:
    """Mean and standard deviation of one GMM layer's per-position scores on training data.

    Attributes
    ----------
    layer : int
        1-based spec index of the GMM layer.
    kind : str
        Which score (see :data:`SCORE_KINDS`).
    mean, std : Tensor, shape (H_l, W_l), float64
    n_samples : int
        Training images the statistics come from.
    """

    layer: int
    kind: str
    mean: Tensor
    std: Tensor
    n_samples: int

    def threshold(self, c: float = DEFAULT_C) -> Tensor:
        """Return ``mean - c * std`` per position."""
        return self.mean - c * self.std

    def outlier_map(self, scores: Float[Tensor, "N H W"], c: float = DEFAULT_C) -> Tensor:
        """Return a bool (N, H_l, W_l) map, True where a position is an outlier."""
        if tuple(scores.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"scores of layer {self.layer} have positions {tuple(self.mean.shape)}; got "
                f"{tuple(scores.shape[1:])}"
            )
        return scores.double() < self.threshold(c)


def fit_position_statistics(
    model: DCGMM,
    images: Tensor,
    *,
    kind: ScoreKind = "loglik",
    batch_size: int = 500,
) -> dict[int, PositionStatistics]:
    """Collect per-position mean and std of every GMM layer's scores over ``images``.

    Pass the training images (the rule compares test positions with what training looked
    like). float64 sums of values shifted by the first batch's mean keep the variance exact.
    """
    if images.shape[0] < 2:
        raise ValueError(f"need at least 2 images to estimate a spread; got {images.shape[0]}")
    maps = position_scores(model, images, kind=kind, batch_size=batch_size)
    out = {}
    for number, values in maps.items():
        v = values.double()
        shift = v[: min(batch_size, v.shape[0])].mean(0)
        centred = v - shift
        mean_c = centred.mean(0)
        var = (centred.square().mean(0) - mean_c.square()) * v.shape[0] / (v.shape[0] - 1)
        out[number] = PositionStatistics(
            number, kind, mean_c + shift, var.clamp_min(0).sqrt(), v.shape[0]
        )
    return out


def save_position_statistics(
    run_dir: str | Path, statistics: dict[int, PositionStatistics], *, source: str
) -> Path:
    """Store the statistics beside the model: ``RUN_DIR/outlier_statistics.safetensors``."""
    tensors = {}
    for number, stats in statistics.items():
        tensors[f"layer{number}.mean"] = stats.mean.contiguous()
        tensors[f"layer{number}.std"] = stats.std.contiguous()
    first = next(iter(statistics.values()))
    metadata = {
        "kind": first.kind,
        "n_samples": str(first.n_samples),
        "source": source,
        "layers": json.dumps(sorted(statistics)),
    }
    path = Path(run_dir) / STATISTICS_FILE
    write_verified_safetensors(path, tensors, metadata)
    return path


def load_position_statistics(run_dir: str | Path) -> tuple[dict[int, PositionStatistics], str]:
    """Return ``(statistics per layer, data source)`` stored in ``run_dir``."""
    path = Path(run_dir) / STATISTICS_FILE
    if not path.exists():
        raise CheckpointError(
            f"{path} is missing; collect the statistics with `dcgmm outliers` (it does so on "
            "the run's training data) or fit_position_statistics + save_position_statistics"
        )
    tensors, metadata = read_verified_safetensors(path)
    n = int(metadata["n_samples"])
    stats = {
        number: PositionStatistics(
            number,
            metadata["kind"],
            tensors[f"layer{number}.mean"],
            tensors[f"layer{number}.std"],
            n,
        )
        for number in json.loads(metadata["layers"])
    }
    return stats, metadata.get("source", "")


def to_pixels(model: DCGMM, layer: int, values: Float[Tensor, "N Hl Wl"]) -> Tensor:
    """Spread a per-position map of GMM layer ``layer`` onto the image grid, (N, H, W).

    Walks down the layers below like sampling does: folding scatters each position's value
    over its window and averages overlaps, pooling repeats it over its window. A pixel's value
    is then the mean over the positions whose receptive field covers it.
    """
    with torch.no_grad():
        device = next(model.parameters()).device
        h = values.to(device, torch.float64)[..., None]  # (N, Hl, Wl, 1)
        for lay in reversed(list(model.layers)[: layer - 1]):
            if isinstance(lay, Folding):
                expanded = h.expand(*h.shape[:3], lay.out_shape[2])
                h = lay.sample(expanded)[..., :1]
            elif isinstance(lay, MaxPooling):
                h = lay.sample(h.expand(*h.shape[:3], lay.out_shape[2]))[..., :1]
            else:  # below a GMM layer only foldings, poolings and GMM layers (grid kept)
                assert isinstance(lay, GMM), lay.spec
        return h[..., 0].cpu()

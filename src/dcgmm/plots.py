"""Pictures of evaluation results: ROC curves (matplotlib) and outlier maps over images.

matplotlib is imported lazily with the non-interactive Agg backend, so importing dcgmm stays
fast and no display is needed.
"""

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from dcgmm.checkpoint import atomic_write_bytes
from dcgmm.images import encode_png, tile

# Outlier positions are tinted in this colour, with opacity proportional to the fraction of
# flagged positions whose receptive field covers the pixel.
OUTLIER_RGB = np.array([1.0, 0.1, 0.1], dtype=np.float32)
MAX_TINT = 0.75


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_roc(
    path: str | Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]], *, title: str
) -> Path:
    """Draw ROC curves ``{label: (fpr, tpr, auc)}`` into one PNG and return its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance (0.500)")
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{label} ({auc:.3f})")
    ax.set_xlabel("false positive rate (outliers taken for inliers)")
    ax.set_ylabel("true positive rate (inliers kept)")
    ax.set_title(title, fontsize=8, wrap=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=7, title="AUC", title_fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def overlay(images: Tensor, fractions: Tensor) -> np.ndarray:
    """Return (N, H, W, 3) RGB images: gray pixels tinted red where ``fractions`` > 0."""
    gray = images.detach().cpu().float().numpy().mean(axis=3, keepdims=True).clip(0, 1)
    alpha = MAX_TINT * fractions.detach().cpu().float().numpy()[..., None].clip(0, 1)
    return (1 - alpha) * gray.repeat(3, axis=3) + alpha * OUTLIER_RGB


def save_outlier_maps(
    path: str | Path,
    rows: list[tuple[Tensor, Tensor]],
    *,
    n_cols: int,
) -> Path:
    """Write rows of (images, per-pixel outlier fractions): each image, then its overlay."""
    panels = []
    for images, fractions in rows:
        gray = images.detach().cpu().float().numpy().mean(axis=3, keepdims=True).clip(0, 1)
        panels += [gray.repeat(3, axis=3), overlay(images, fractions)]
    grid = tile(np.concatenate(panels), n_cols=n_cols, scale=3)
    path = Path(path)
    atomic_write_bytes(path, encode_png(grid))
    return path

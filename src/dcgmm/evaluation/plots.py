"""Pictures of runs and results: ROC curves, outlier maps, training curves, centroid grids.

matplotlib is imported lazily with the non-interactive Agg backend, so importing dcgmm stays
fast and no display is needed.
"""

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from dcgmm.io.images import encode_png, tile
from dcgmm.io.run_files import atomic_write_bytes
from dcgmm.layers import Folding
from dcgmm.model import DCGMM

__all__ = [
    "MAX_TINT",
    "OUTLIER_RGB",
    "centroid_images",
    "overlay",
    "save_outlier_maps",
    "save_roc",
    "save_training_curves",
]

# Outlier positions are tinted in this colour, with opacity proportional to the fraction of
# flagged positions whose receptive field covers the pixel.
OUTLIER_RGB = np.array([1.0, 0.1, 0.1], dtype=np.float32)
MAX_TINT = 0.75


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: str | Path) -> Path:
    """Lay out, write and close a figure; return its path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    return _save_figure(plt, fig, path)


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


def centroid_images(model: DCGMM) -> list[tuple[int, Tensor]]:
    """Return ``(layer index, (K, h, w, c) images)`` of every shared GMM layer's means.

    A GMM layer above a folding shows each centroid as the folded window (h, w, channels); with
    more than 3 channels (a layer above another GMM) the channels are laid side by side.
    """
    out = []
    layers = list(model.layers)
    for index, gmm in model.gmm_layers():
        if gmm.independent:
            continue
        below = layers[index - 1] if index else None
        means = gmm.means.detach().cpu().reshape(gmm.n_components, -1)
        if isinstance(below, Folding):
            (fy, fx), c = below.patch_size, below.input_shape[2]
        else:
            fy, fx, c = 1, 1, means.shape[1]
        windows = means.reshape(-1, fy, fx, c)
        if c not in (1, 3):  # channels side by side: (K, fy, fx * c, 1)
            windows = windows.permute(0, 1, 3, 2).reshape(-1, fy, c * fx, 1)
        out.append((index + 1, windows))
    return out


def save_training_curves(path: str | Path, records: list[dict[str, Any]], *, title: str) -> Path:
    """Draw per-layer objective, learning rate and sigma_som (and accuracy) from metrics.jsonl."""
    plt = _pyplot()
    layers: dict[str, dict[str, list[float]]] = {}
    accuracy: list[tuple[float, float]] = []
    for record in records:
        for layer in record["layers"]:
            value = layer.get("objective", layer.get("cross_entropy"))
            if value is None:
                continue
            series = layers.setdefault(f"{layer['index']} {layer['spec']}", {})
            series.setdefault("value", []).append(float(value))
            for key in ("lr", "sigma_som"):
                if key in layer:
                    series.setdefault(key, []).append(float(layer[key]))
            series.setdefault("step", []).append(float(record["step"]))
        if record.get("classifier_accuracy") is not None:
            accuracy.append((float(record["step"]), float(record["classifier_accuracy"])))
    n_panels = 3 + bool(accuracy)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), dpi=110)
    labels = {
        "value": "objective (nats; classifier: cross-entropy)",
        "lr": "learning rate",
        "sigma_som": "sigma_som",
    }
    for ax, key in zip(axes, ("value", "lr", "sigma_som"), strict=False):
        for colour, (name, series) in enumerate(layers.items()):
            if key in series:
                steps = series["step"][: len(series[key])]
                ax.plot(steps, series[key], color=f"C{colour}", label=f"layer {name}")
        ax.set_xlabel("step")
        ax.set_ylabel(labels[key])
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        # Layers' objectives differ by orders of magnitude (nats grow with the dimension).
        ax.set_yscale("symlog" if key == "value" else "log")
    axes[0].legend(fontsize=7)
    if accuracy:
        accuracy_steps, accuracy_values = zip(*accuracy, strict=True)
        axes[3].plot(accuracy_steps, accuracy_values)
        axes[3].set_xlabel("step")
        axes[3].set_ylabel("classifier accuracy (training batches)")
        axes[3].grid(alpha=0.3)
        axes[3].xaxis.set_major_locator(plt.MaxNLocator(4))
    fig.suptitle(title, fontsize=9)
    return _save_figure(plt, fig, path)

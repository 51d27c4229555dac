"""
Outlier detection: ROC curves and outlier maps
==============================================

The 2022 paper's protocol: train on the digits 1-9, then score test images of 1-9
(inliers) and of 0 (outliers). A GMM layer scores an image by the mean of its
per-position log-likelihoods; :func:`dcgmm.evaluation.outlier_detection.detect_outliers` reports
the ROC AUC of every GMM layer and, following the 2021 paper, flags single positions
whose log-likelihood lies more than ``c`` training standard deviations below the
training mean (the outlier maps, spread back onto the pixels they see). The model is the
gallery's two-layer ``F(8,2)-G(25)-F(11,1)-G(25)`` trained for 1,200 steps of EM; the
full-budget AUCs of the papers' presets A-G are on the :doc:`Table I results page
<../results/table1>`.
"""

import matplotlib.pyplot as plt
import torch

from dcgmm import DCGMM, TrainConfig, Trainer, load_dataset
from dcgmm.evaluation.outlier_detection import detect_outliers
from dcgmm.evaluation.outliers import fit_position_statistics, to_pixels
from dcgmm.evaluation.plots import overlay

train = load_dataset("mnist", classes=range(1, 10))
inliers = load_dataset("mnist", split="test", classes=range(1, 10)).images
outliers = load_dataset("mnist", split="test", classes=[0]).images
model = DCGMM.from_spec(
    "F(8,2)-G(25)-F(11,1)-G(25)",
    train.image_shape,
    generator=torch.Generator().manual_seed(0),
)
config = TrainConfig(
    steps=1200, solver="em", annealing_window=20, seed=0
)  # gallery budget
Trainer(model, config, train.images).run()

# %%
# Per-position statistics come from the training images; ``detect_outliers`` scores both
# sets at every GMM layer (exact log-likelihood) and draws the maps at layer 2, the
# highest one with more than one position (11 x 11 positions, each seeing an 8 x 8
# patch).
statistics = fit_position_statistics(model, train.images)
report = detect_outliers(model, inliers, outliers, statistics, all_layers=True, c=2.0)
for layer, auc in report.auc_per_layer.items():
    print(f"layer {layer} {model.layers[layer - 1].spec}: AUC {100 * auc:.1f}%")
print(
    "flagged positions:",
    {r: round(report.flagged_fraction(r), 3) for r in report.flagged},
)

fig, ax = plt.subplots(figsize=(4.2, 4))
for label, (fpr, tpr, auc) in report.curves.items():
    ax.plot(fpr, tpr, label=f"{label}: AUC {100 * auc:.1f}%")
ax.plot([0, 1], [0, 1], ":", color="grey")
ax.set(xlabel="false positive rate (0s taken for inliers)", ylabel="true positive rate")
ax.set_title("inliers 1-9 vs outliers 0", fontsize=10)
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()

# %%
# Outlier maps: each image beside itself with the flagged positions of layer 2 tinted
# red over the pixels they see (the darker, the more flagged positions cover the pixel).
fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
for r, role in enumerate(("inliers", "outliers")):
    images = {"inliers": inliers, "outliers": outliers}[role][:8]
    tinted = overlay(
        images, to_pixels(model, report.map_layer, report.flagged[role][:8])
    )
    for c in range(8):
        axes[2 * r, c].imshow(images[c, ..., 0], cmap="gray", vmin=0, vmax=1)
        axes[2 * r + 1, c].imshow(tinted[c])
    axes[2 * r, 0].set_title(f"{role} (test)", loc="left", fontsize=9)
    axes[2 * r + 1, 0].set_title(
        f"flagged at layer {report.map_layer}", loc="left", fontsize=9
    )
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()

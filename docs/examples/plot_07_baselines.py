"""
DCGMM beside the baselines, through one interface
=================================================

Every model of the library, DCGMM or baseline, can be wrapped as a
:class:`dcgmm.ImageModel` (:func:`dcgmm.as_image_model`): NHWC images in [0, 1] in and
out, ``fit``, ``outlier_score`` (higher is more typical), ``sample``, ``inpaint``,
``embed``. So one loop judges a DCGMM, a Normal Similarity Network (NSN, Nandy et al.
2018) and a deep latent Gaussian mixture VAE (DLGMM, Nalisnick et al. 2016) alike:
trained on the digits 1-9, scored on test 1-9 against 0, sampled, and asked to complete
right halves. Every model here gets a small gallery budget (the DCGMM 1,200 EM steps,
the NSN 1,000 images and 15 iterations per layer, the VAE 3 epochs), so the ranking
below says nothing about the methods: the :doc:`baselines results page
<../results/baselines>` compares them at full budgets.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from dcgmm import DCGMM, as_image_model, load_dataset, load_run, make_mask
from dcgmm.baselines.nsn import NSN
from dcgmm.baselines.vae import dlgmm
from dcgmm.evaluation.outliers import roc_auc

train = load_dataset("mnist", classes=range(1, 10)).images
inliers = load_dataset("mnist", split="test", classes=range(1, 10)).images
outliers = load_dataset("mnist", split="test", classes=[0]).images

seed = torch.Generator().manual_seed(0)
dcgmm_model = DCGMM.from_spec("F(8,2)-G(25)-F(11,1)-G(25)", (28, 28, 1), generator=seed)
models = {
    "DCGMM": as_image_model(dcgmm_model),
    "NSN": as_image_model(NSN((28, 28, 1), "28x28")),
    "DLGMM": as_image_model(dlgmm(generator=torch.Generator().manual_seed(0))),
}
# Each model's own training procedure and options, behind the same fit. The DCGMM's
# options are TrainConfig fields; with ``run_dir`` it writes a run directory, which
# ``load_run`` reads back behind the same interface (as every ``dcgmm`` command does).
run_dir = Path(tempfile.mkdtemp()) / "dcgmm-1-9"
models["DCGMM"].fit(
    train, steps=1200, solver="em", annealing_window=20, seed=0, run_dir=run_dir
)
models["DCGMM"] = load_run(run_dir).model
models["NSN"].fit(
    train[:1000],
    taus=[-0.93, 0.75, 0.65],
    new_filters_per_iter=8,
    max_filters=100,
    max_iters=15,
    generator=torch.Generator().manual_seed(0),
)
models["DLGMM"].fit(train, max_epochs=3, seed=0)

# %%
# Outlier AUC from each model's own score (the DCGMM's top-layer log-likelihood, the
# NSN's max-component score, the VAE's importance-sampled log p(x)).
for name, model in models.items():
    auc = roc_auc(model.outlier_score(inliers), model.outlier_score(outliers))
    print(f"{name:6s} AUC {100 * auc:.1f}%  ({model.score_name})")

# %%
# Samples and right-half completions of the same eight test digits, one row per model.
digits = inliers[:8]
missing = make_mask("right-half", tuple(digits.shape))
rows = {"test digits": digits}
for name, model in models.items():
    rows[f"{name}: samples"] = model.sample(
        8, generator=torch.Generator().manual_seed(0)
    )
    rows[f"{name}: in-painted right half"] = model.inpaint(
        digits, missing, generator=torch.Generator().manual_seed(0)
    )
fig, axes = plt.subplots(len(rows), 8, figsize=(6.4, 6.6))
for r, (title, images) in enumerate(rows.items()):
    for ax, image in zip(axes[r], images, strict=True):
        ax.imshow(image[..., 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    axes[r, 0].set_title(title, loc="left", fontsize=8)
fig.subplots_adjust(
    left=0.02, right=0.98, top=0.96, bottom=0.01, hspace=0.45, wspace=0.08
)

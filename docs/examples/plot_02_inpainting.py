"""
In-painting with several masks
==============================

Hide part of each test digit and let the model complete it: the image goes up to the top
GMM layer with the hidden pixels left out of every density on the way (marginalised),
that layer's responsibilities drive a top-down walk, and the known pixels are put back
unchanged. Four masks of :func:`dcgmm.make_mask`; two ways down: a draw of the strongest
component (``top_s=1``, sharp) and the conditional expectation (``mode="mean"``, the
squared-error optimum of one GMM layer, blurrier). The model is the gallery's 1,200-step
EM model; the in-painting errors at full budget are on the :doc:`generation results page
<../results/generation>`.
"""

import matplotlib.pyplot as plt
import torch

from dcgmm import (
    DCGMM,
    SamplingConfig,
    TrainConfig,
    Trainer,
    inpaint,
    load_dataset,
    make_mask,
)
from dcgmm.io.images import masked_view

train = load_dataset("mnist")
test = load_dataset("mnist", split="test")
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
# Complete the first eight test digits of different classes under every mask. The mask
# is a boolean tensor of the images' shape, True where a pixel is missing (NaN pixels
# work too: ``inpaint(model, images_with_nan)``).
digits = torch.stack([test.images[test.labels == c][0] for c in range(8)])
masks = ["right-half", "top-half", "center", "random:0.5"]
ways = {
    "top-1 draw": SamplingConfig(top_s=1),
    "expectation": SamplingConfig(mode="mean"),
}

fig, axes = plt.subplots(len(masks) * 3, len(digits), figsize=(7, 12))
for m, kind in enumerate(masks):
    missing = make_mask(
        kind, tuple(digits.shape), generator=torch.Generator().manual_seed(0)
    )
    rows = {f"{kind}: input, hidden pixels blue": masked_view(digits, missing)}
    for name, config in ways.items():
        completed = inpaint(
            model,
            digits,
            missing,
            config=config,
            generator=torch.Generator().manual_seed(0),
        )
        mse = (completed - digits)[missing].square().mean().item()
        rows[f"{name} (MSE {mse:.3f})"] = completed
        assert torch.equal(
            completed[~missing], digits[~missing]
        )  # known pixels untouched
    for r, (title, images) in enumerate(rows.items()):
        for ax, image in zip(axes[3 * m + r], images, strict=True):
            ax.imshow(image.expand(28, 28, 3).clamp(0, 1))
            ax.set_axis_off()
        axes[3 * m + r, 0].set_title(title, loc="left", fontsize=9)
fig.suptitle("in-painting (MSE on the hidden pixels of these 8 digits)", fontsize=10)
fig.subplots_adjust(
    left=0.02, right=0.98, top=0.94, bottom=0.01, hspace=0.4, wspace=0.05
)

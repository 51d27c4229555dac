"""
Class-conditional samples
=========================

Two ways to draw digits of a chosen class. The 2022 paper's Table III trains **one model
per class** and samples each unconditionally; here ten small models (one per digit,
1,000 training images each, 300 gallery steps of EM each). A single model with a
**classifier layer** ``C(10,2)`` (reading the two highest GMM layers) samples a class by
inverting the classifier into a control signal for the top GMM layer (``sample(model, n,
classes=...)``); after this short budget that inversion picks a wrong digit for some
classes. The full-budget sample quality of the paper's protocol is on the :doc:`Table
III results page <../results/table3>`.
"""

import matplotlib.pyplot as plt
import torch

from dcgmm import (
    DCGMM,
    SamplingConfig,
    TrainConfig,
    Trainer,
    evaluate,
    load_dataset,
    sample,
)

SPEC = "F(8,2)-G(25)-F(11,1)-G(25)"
per_class = []
for digit in range(10):
    train = load_dataset("mnist", classes=[digit])
    model = DCGMM.from_spec(
        SPEC, train.image_shape, generator=torch.Generator().manual_seed(0)
    )
    config = TrainConfig(
        steps=300, solver="em", annealing_window=5, layer_delay=0.0, seed=0
    )
    Trainer(model, config, train.images).run()
    top_one = SamplingConfig(top_s=1)
    per_class.append(
        sample(model, 8, config=top_one, generator=torch.Generator().manual_seed(0))
    )


def show(rows: list[torch.Tensor], title: str) -> None:
    """Draw one row of images per class."""
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(6, 7.5))
    for r, images in enumerate(rows):
        for ax, image in zip(axes[r], images, strict=True):
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
            ax.set_axis_off()
        axes[r, 0].text(
            -0.15, 0.5, str(r), transform=axes[r, 0].transAxes, ha="right", va="center"
        )
    fig.suptitle(title, fontsize=10)


show(per_class, "one model per class (Table III protocol), top-S 1")

# %%
# One model with a classifier layer. It needs the labels; its classifier learns by SGD
# (``classifier_lr``) beside the GMM layers' EM. Its own test accuracy says how well the
# top layers separate the classes.
train = load_dataset("mnist")
test = load_dataset("mnist", split="test")
model = DCGMM.from_spec(
    "F(8,2)-G(25)-F(11,1)-G(36)-C(10,2)",
    train.image_shape,
    generator=torch.Generator().manual_seed(0),
)
config = TrainConfig(
    steps=1300, solver="em", annealing_window=20, classifier_lr=0.1, seed=0
)
Trainer(model, config, train.images, train.labels).run()
accuracy = evaluate(model, test.images, test.labels).classifier_accuracy
print(f"classifier test accuracy: {accuracy:.1%}")

classes = torch.arange(10).repeat_interleave(8)  # 8 samples of every class
config = SamplingConfig(top_s={4: 2, 2: 1})  # top-S 2 at the top GMM layer, 1 below
generator = torch.Generator().manual_seed(0)
images = sample(model, 80, classes=classes, config=config, generator=generator)
show(
    list(images.reshape(10, 8, 28, 28, 1)),
    "one model, classifier inversion, 1,300 steps",
)

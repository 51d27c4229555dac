"""
Train a DCGMM and draw samples
==============================

Build the two-layer DCGMM of ``make demo`` from its spec string, train it on the
built-in MNIST subset, follow each GMM layer's objective and annealing radius, and draw
top-down samples. The gallery trains 1,200 steps of stepwise EM with a 20-step annealing
window (about 10 s on one thread); ``make demo`` trains 6,000 SGD steps with the papers'
100-step window, and the results pages train longer still.
"""

import json
import tempfile
from pathlib import Path

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
from dcgmm.evaluation.scores import format_scores

train = load_dataset("mnist")  # 10,000 digits, float32 NHWC in [0, 1]
test = load_dataset("mnist", split="test")
model = DCGMM.from_spec(
    "F(8,2)-G(25)-F(11,1)-G(25)",
    train.image_shape,
    generator=torch.Generator().manual_seed(0),
)
print(model)

# %%
# Train. With a run directory the trainer writes ``metrics.jsonl`` (and checkpoints):
# every ``log_every`` steps, each GMM layer's mean objective and its annealing radius
# sigma_som. The second GMM layer starts after 10% of the steps (``layer_delay``); its
# objective first falls while its input, the lower layer's responsibilities, changes.
run_dir = Path(tempfile.mkdtemp()) / "run"
config = TrainConfig(steps=1200, solver="em", annealing_window=20, log_every=20, seed=0)
Trainer(model, config, train.images, run_dir=run_dir).run()
records = [
    json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
]

fig, axes = plt.subplots(1, 3, figsize=(10, 3))
for i, layer in enumerate(records[0]["layers"]):  # the two GMM layers
    rows = [(r["step"], r["layers"][i]) for r in records if r["layers"][i]["objective"]]
    steps = [step for step, _ in rows]
    name = f"layer {layer['index']} {layer['spec']}"
    axes[i].plot(steps, [entry["objective"] for _, entry in rows])
    axes[i].set(xlabel="step", ylabel="nats", title=f"{name}: mean objective")
    axes[2].plot(steps, [entry["sigma_som"] for _, entry in rows], label=name)
axes[2].set(xlabel="step", yscale="log", title="annealing radius sigma_som")
axes[2].legend()
fig.tight_layout()

# %%
# Per-layer test scores: the annealed objective, the max-component and the exact
# log-likelihood, each the mean over the layer's positions (nats).
print(format_scores(evaluate(model, test.images)))

# %%
# Samples start at the top GMM layer with a uniform control signal. ``top_s=1`` makes
# every position take its strongest component; the default draws from all.
fig, axes = plt.subplots(2, 10, figsize=(9, 2.2))
for row, config in enumerate([SamplingConfig(top_s=1), SamplingConfig()]):
    images = sample(
        model, 10, config=config, generator=torch.Generator().manual_seed(1)
    )
    for ax, image in zip(axes[row], images, strict=True):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    axes[row, 0].set_title(
        "top-S = 1" if row == 0 else "all components", loc="left", fontsize=9
    )
fig.suptitle("top-down samples after 1,200 gallery steps")

# sphinx_gallery_thumbnail_number = 2

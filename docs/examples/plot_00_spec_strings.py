"""
Spec strings, shape chains and receptive fields
===============================================

A DCGMM is written as a chain of layers in the papers' notation: ``F(f,s)`` folding,
``P(k,s)`` max-pooling, ``G(K)`` a GMM layer (``G(K,indep)``: one mixture per position)
and ``C(S)`` a classifier. :meth:`dcgmm.DCGMM.from_spec` checks every shape before any
tensor exists and prints the chain; a spec that does not fit fails with a message that
points into it. No training here: the figure shows which pixels one position of each GMM
layer of preset E sees (its receptive field), found by walking a one-hot position map
down the layers with :func:`dcgmm.evaluation.outliers.to_pixels`.
"""

import matplotlib.pyplot as plt
import torch

from dcgmm import DCGMM, PRESETS, SpecError, format_spec, parse_spec
from dcgmm.evaluation.outliers import to_pixels

for name in ("A", "B", "E"):
    print(
        f"preset {name}:", DCGMM.from_spec(PRESETS[name], input_shape=(28, 28, 1)), "\n"
    )

print(format_spec(parse_spec(" f(3, 1)-G(25,indep) - P(2,2,ceil)")))  # canonical form
for bad in ("F(3,1)-G(25)-F(30,1)-G(49)", "F(3,1)-X(25)"):
    try:
        DCGMM.from_spec(bad, input_shape=(28, 28, 1))
    except SpecError as error:
        print(f"\n{type(error).__name__}: {error}")

# %%
# Receptive fields of the middle position of every GMM layer of preset E.
model = DCGMM.from_spec("E", input_shape=(28, 28, 1))
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
for ax, (index, gmm) in zip(axes, model.gmm_layers(), strict=True):
    h, w, _ = gmm.out_shape
    one_hot = torch.zeros(1, h, w)
    one_hot[0, h // 2, w // 2] = 1.0
    field = to_pixels(model, index + 1, one_hot)[0] > 0
    ax.imshow(field, cmap="Blues", vmin=0, vmax=1.3)
    size = f"{int(field.any(1).sum())}x{int(field.any(0).sum())}"
    title = f"layer {index + 1} {gmm.spec}: {h}x{w} positions\none sees {size} pixels"
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

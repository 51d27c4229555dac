"""The demo, as one library call: a small DCGMM on the built-in MNIST, its scores and pictures.

``dcgmm demo`` (``make demo``) is :func:`run_demo` with a progress bar.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from dcgmm.evaluation.scores import Evaluation, evaluate
from dcgmm.generation.inpainting import inpaint, make_mask
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.io.data import load_dataset
from dcgmm.io.images import save_grid, save_inpainting_grid
from dcgmm.io.run_files import CONFIG_FILE
from dcgmm.layers import Folding
from dcgmm.model import DCGMM
from dcgmm.training.config import TrainConfig
from dcgmm.training.metrics import TrainingMetrics
from dcgmm.training.trainer import Trainer

__all__ = ["DEMO_EPOCHS", "DEMO_SOLVER", "DEMO_SPEC", "DemoResult", "run_demo"]

DEMO_SPEC = "F(8,2)-G(25)-F(11,1)-G(25)"
# A two-layer DCGMM small enough to train on 2 CPU cores in about a minute. Its annealing
# needs 50 reductions of 100 steps each from a layer's third window, and the second layer
# starts at a tenth of the run, hence 6000 steps (60 epochs of 10,000 digits) by stepwise EM,
# whose radius shrinks every window (by SGD, which waits for a stationary window, the layers
# ended at sigma 0.021 and 0.093 after 6000 steps: not annealed).
DEMO_EPOCHS = 60
DEMO_SOLVER: Literal["sgd", "em"] = "em"


@dataclass(frozen=True)
class DemoResult:
    """The demo's trained model, its test scores (:func:`~dcgmm.evaluate`) and its pictures."""

    model: DCGMM
    scores: Evaluation
    n_test: int
    pictures: list[Path]


def run_demo(
    out: str | Path,
    *,
    epochs: int = DEMO_EPOCHS,
    callback: Callable[[int, int, TrainingMetrics | None], None] | None = None,
) -> DemoResult:
    """Train :data:`DEMO_SPEC` on the built-in MNIST into run directory ``out`` (by EM).

    Writes the run and three PNG grids beside it: the first layer's centroids, 64 samples
    (top-S 1) and in-paintings of the right half of 12 test digits. ``callback`` goes to
    :meth:`Trainer.run` (a progress bar).
    """
    out = Path(out)
    if (out / CONFIG_FILE).exists():
        raise ValueError(f"{out} already holds a run; remove it or pass another out")
    train = load_dataset("mnist")
    model = DCGMM.from_spec(
        DEMO_SPEC, train.image_shape, generator=torch.Generator().manual_seed(0)
    )
    info = {"preset": None, "data": {"source": "mnist", "n_samples": len(train)}}
    config = TrainConfig(epochs=epochs, seed=0, solver=DEMO_SOLVER)
    trainer = Trainer(model, config, train.images, run_dir=out, run_info=info)
    trainer.run(callback=callback)
    test = load_dataset("mnist", split="test")
    scores = evaluate(model, test.images, test.labels)
    _, first = next(model.gmm_layers())
    centroids = first.means.detach().reshape(-1, *first_patch_shape(model))
    top_one = SamplingConfig(top_s=1)  # each position takes its strongest component
    samples = sample(model, 64, config=top_one, generator=torch.Generator().manual_seed(0))
    digits = test.images[:12]
    missing = make_mask("right-half", tuple(digits.shape))
    completed = inpaint(model, digits, missing, config=top_one, generator=torch.Generator())
    pictures = [
        save_grid(out / "centroids.png", centroids, normalize=False, scale=8),
        save_grid(out / "samples.png", samples, scale=3),
        save_inpainting_grid(out / "inpainting.png", digits, missing, completed),
    ]
    return DemoResult(model, scores, len(test), pictures)


def first_patch_shape(model: DCGMM) -> tuple[int, int, int]:
    """Return the (h, w, c) image patch that the first GMM layer's centroids cover."""
    first = model.layers[0]
    c = model.input_shape[2]
    if isinstance(first, Folding):
        return (first.patch_size[0], first.patch_size[1], c)
    return (1, 1, c)

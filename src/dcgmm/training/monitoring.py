"""Watch a training run in TensorBoard (optional: ``pip install 'dcgmm[tensorboard]'``).

:class:`TensorBoardMonitor` is a :meth:`Trainer.run <dcgmm.training.trainer.Trainer.run>` callback
that writes to ``RUN_DIR/tensorboard/``. Tags:

- at every metrics record (``log_every`` steps), per trainable layer number ``n``:
  ``objective/layer{n}`` (a GMM layer's mean objective, nats), ``lr/layer{n}`` (its annealed
  learning rate), ``sigma_som/layer{n}``, ``annealing_reductions/layer{n}``; for a
  classifier ``classifier/cross_entropy`` and ``classifier/accuracy`` (on the training
  batches); ``train/epoch``;
- every ``image_every`` steps and at the last step: ``centroids/layer{n}`` (each shared GMM
  layer's means as image patches, each rescaled to its own range) and ``samples`` (top-down
  samples with a fixed seed, so frames are comparable over time);
- once: the text ``run/model`` (the shape chain).

``metrics.jsonl`` stays the plain record; this module only adds a view of it.
``torch.utils.tensorboard`` is imported when a monitor is made, never with ``dcgmm``.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcgmm.evaluation.plots import centroid_images
from dcgmm.generation.sampling import SamplingConfig, sample
from dcgmm.io.images import tile
from dcgmm.model import DCGMM
from dcgmm.training.metrics import TrainingMetrics

__all__ = [
    "INSTALL_HINT",
    "N_SAMPLES",
    "TENSORBOARD_DIR",
    "TensorBoardMonitor",
    "summary_writer_class",
]

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install 'dcgmm[tensorboard]'"
N_SAMPLES = 16


def summary_writer_class() -> Any:
    """Return ``torch.utils.tensorboard.SummaryWriter``.

    Raises
    ------
    ImportError
        With the install hint, if the tensorboard package is missing.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            f"TensorBoard logging needs the tensorboard package ({err}); install it with "
            f"`{INSTALL_HINT}`, or watch the run with `dcgmm plot RUN_DIR` instead"
        ) from None
    return SummaryWriter


def _image(images: torch.Tensor | np.ndarray, **kwargs: Any) -> tuple[np.ndarray, str]:
    grid = tile(images, scale=2, **kwargs)
    return grid, "HW" if grid.ndim == 2 else "HWC"


class TensorBoardMonitor:
    """Write a run's scalars and image grids for TensorBoard; call it after every step.

    Parameters
    ----------
    run_dir : str or Path
        The run directory; events go to ``run_dir/tensorboard``.
    model : DCGMM
        The model being trained (read, never changed).
    image_every : int
        Steps between centroid and sample grids (also drawn at the last step).
    start_step : int
        The step the run starts or resumes at; events of later steps, written before a crash,
        are purged from view.
    seed : int
        Seed of the sample grids.
    """

    def __init__(
        self,
        run_dir: str | Path,
        model: DCGMM,
        *,
        image_every: int,
        start_step: int = 0,
        seed: int = 0,
    ) -> None:
        if image_every <= 0:
            raise ValueError(f"image_every must be a positive number of steps; got {image_every}")
        self._writer_class = summary_writer_class()
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.model = model
        self.image_every = image_every
        self.seed = seed
        self._last_step = start_step
        self.writer = self._open(start_step + 1 if start_step else None)
        if not start_step:
            self.writer.add_text("run/model", f"    {model}".replace("\n", "\n    "), 0)

    def _open(self, purge_step: int | None) -> Any:
        return self._writer_class(str(self.log_dir), purge_step=purge_step)

    def __call__(self, step: int, n_steps: int, record: TrainingMetrics | None) -> None:
        """Log ``record`` (if any) and, when due, the image grids of ``step``."""
        if step <= self._last_step:  # a rollback: steps from `step` on are done again
            self.writer.close()
            self.writer = self._open(purge_step=step)
        self._last_step = step
        if record is not None:
            self.log_metrics(record)
        if step % self.image_every == 0 or step == n_steps:
            self.log_images(step)
        if record is not None or step == n_steps:
            self.writer.flush()

    def log_metrics(self, record: TrainingMetrics) -> None:
        """Write the scalars of one trainer record (a line of ``metrics.jsonl``)."""
        step = record.step
        add = self.writer.add_scalar
        add("train/epoch", record.epoch, step)
        for layer in record.layers:
            number = layer.index
            if not layer.is_gmm:  # the classifier: minimised, not an objective
                if layer.cross_entropy is not None:
                    add("classifier/cross_entropy", layer.cross_entropy, step)
                continue
            if layer.objective is not None:  # None while a GMM layer waits (layer_delay)
                add(f"objective/layer{number}", layer.objective, step)
            if layer.lr is not None:  # SGD's learning rate, or EM's step size
                add(f"lr/layer{number}", layer.lr, step)
            if layer.em_step_size is not None:
                add(f"em_step_size/layer{number}", layer.em_step_size, step)
            add(f"sigma_som/layer{number}", layer.sigma_som, step)
            add(f"annealing_reductions/layer{number}", layer.n_reductions, step)
        if record.classifier_accuracy is not None:
            add("classifier/accuracy", record.classifier_accuracy, step)

    @torch.no_grad()
    def log_images(self, step: int) -> None:
        """Write the centroid grid of every shared GMM layer and a grid of samples."""
        for number, centroids in centroid_images(self.model):
            grid, formats = _image(centroids, normalize=True)
            self.writer.add_image(f"centroids/layer{number}", grid, step, dataformats=formats)
        generator = torch.Generator(device=next(self.model.parameters()).device)
        images = sample(
            self.model,
            N_SAMPLES,
            config=SamplingConfig(),
            generator=generator.manual_seed(self.seed),
        )
        grid, formats = _image(images)
        self.writer.add_image("samples", grid, step, dataformats=formats)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

"""Layer-wise SGD training of a DCGMM (spec §3).

Every trainable layer ascends its own objective on the same mini-batch, with SingleExp
annealing per GMM layer.
"""

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dcgmm.annealing import AnnealingConfig, SingleExpSchedule
from dcgmm.checkpoint import load_trainer_state, save_checkpoint
from dcgmm.distributed import DistContext
from dcgmm.layers import GMM, ClassifierFeed, LinearClassifier
from dcgmm.layers.base import TrainableLayer
from dcgmm.model import DCGMM

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of a training run; defaults are the authors' recipes (spec §3).

    Give exactly one of ``epochs`` and ``steps``. Learning rates of a GMM layer are
    ``lr * lr_factor_*`` with ``lr`` annealed from ``lr_start`` to ``lr_floor``; independent
    layers multiply them by H*W to undo the mean over positions.
    """

    batch_size: int = 100
    epochs: int | None = None
    steps: int | None = None
    seed: int = 0
    lr_start: float = 0.011
    lr_floor: float = 0.01
    lr_factor_means: float = 1.0
    lr_factor_precisions: float = 0.1
    lr_factor_weights: float = 0.2
    classifier_lr: float = 0.01
    annealing_window: int = 100
    annealing_delta: float = 0.05
    annealing_gamma: float = 0.9
    sigma_floor: float = 0.01
    layer_delay: float = 0.1
    checkpoint_every: int = 1000
    log_every: int = 100
    device: str = "cpu"

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"give exactly one of epochs and steps; got epochs={self.epochs}, "
                f"steps={self.steps}. The recipes train 25-80 epochs"
            )
        for name in ("batch_size", "annealing_window", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if (self.epochs or 1) <= 0 or (self.steps or 1) <= 0:
            raise ValueError("epochs and steps must be positive")
        if not 0 <= self.layer_delay < 1:
            raise ValueError(f"layer_delay must be in [0, 1); got {self.layer_delay}")
        for f in fields(self):
            if f.name.startswith("lr_factor") and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0; got {getattr(self, f.name)}")
        AnnealingConfig(**self._annealing_kwargs())  # validates the schedule's fields

    def _annealing_kwargs(self) -> dict[str, Any]:
        return {
            "lr_start": self.lr_start,
            "lr_floor": self.lr_floor,
            "sigma_floor": self.sigma_floor,
            "window": self.annealing_window,
            "delta": self.annealing_delta,
            "gamma": self.annealing_gamma,
        }

    @property
    def annealing(self) -> AnnealingConfig:
        """The SingleExp schedule's parameters."""
        return AnnealingConfig(**self._annealing_kwargs())

    def steps_per_epoch(self, n_samples: int) -> int:
        """Return the number of full batches in one pass (the remainder is dropped)."""
        if n_samples < self.batch_size:
            raise ValueError(
                f"the dataset has {n_samples} samples, fewer than one batch of "
                f"{self.batch_size}; lower --batch-size or use more data"
            )
        return n_samples // self.batch_size

    def total_steps(self, n_samples: int) -> int:
        """Return the number of SGD steps of the whole run."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * self.steps_per_epoch(n_samples)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


# The recipes' per-configuration learning-rate factors (spec §3).
PRESET_TRAIN_OVERRIDES: dict[str, dict[str, float]] = {
    "A": {"lr_factor_weights": 0.5, "lr_factor_precisions": 0.5},
    "F": {"lr_factor_weights": 0.0},
    "G": {"lr_factor_weights": 0.0},
}


def preset_config(preset: str | None, config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """Apply a preset's recipe factors to ``config``, except fields the user set explicitly."""
    overrides = {
        k: v for k, v in PRESET_TRAIN_OVERRIDES.get(preset or "", {}).items() if k not in explicit
    }
    return replace(config, **overrides) if overrides else config  # type: ignore[arg-type]


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> Tensor:
    """Return the sample order of one epoch.

    It is a function of (seed, epoch) alone, so a resumed run sees exactly the batches an
    uninterrupted one would.
    """
    derived = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(derived & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=generator).to(device)


class NumericalError(FloatingPointError):
    """Training produced a non-finite objective or parameter."""


class Trainer:
    """Train a :class:`DCGMM` on in-memory images, layer by layer, with SGD and annealing.

    Parameters
    ----------
    model : DCGMM
        The model; it is moved to ``config.device``.
    config : TrainConfig
        Hyper-parameters.
    images : Tensor, shape (N, H, W, C)
        Training images, float in [0, 1].
    labels : Tensor, shape (N,), optional
        Integer labels; required if the model has a classifier layer.
    run_dir : Path, optional
        Where checkpoints and ``metrics.jsonl`` go; nothing is written without one.
    dist : DistContext, optional
        This process's place in a data-parallel job (:mod:`dcgmm.distributed`): each rank
        trains on its share of every global batch of ``config.batch_size`` and the gradients
        are averaged; only rank 0 writes files.
    """

    def __init__(
        self,
        model: DCGMM,
        config: TrainConfig,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        run_dir: str | Path | None = None,
        dist: DistContext | None = None,
    ) -> None:
        model.check_input(images, "images")
        self.dist = dist if dist is not None else DistContext()
        self.dist.check_batch_size(config.batch_size)
        if model.classifier is not None and labels is None:
            raise ValueError(
                f"model {model.spec!r} has a classifier layer and needs labels; got labels=None"
            )
        if labels is not None and labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}"
            )
        self.device = torch.device(config.device)
        self.model = model.to(self.device)
        self.dist.broadcast_(self.model)  # identical start on every rank, as DDP does
        self.config = config
        self.images = images.to(self.device)
        self.labels = labels.to(self.device) if labels is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.n_steps = config.total_steps(images.shape[0])
        self.steps_per_epoch = config.steps_per_epoch(images.shape[0])
        self.step = 0
        self._trainable = [
            (i, layer) for i, layer in enumerate(model.layers) if isinstance(layer, TrainableLayer)
        ]
        gmm_indices = [i for i, _ in model.gmm_layers()]
        self._start_step = {
            idx: math.ceil(config.layer_delay * rank * self.n_steps - 1e-9)
            for rank, idx in enumerate(gmm_indices)
        }
        self.schedules = {
            idx: SingleExpSchedule.start(config.annealing, layer.sigma_som_value)
            for idx, layer in model.gmm_layers()
        }
        self.optimizer = torch.optim.SGD(self._param_groups(), lr=config.lr_start)
        n = len(self._trainable)
        # Per-layer sums live on the device; the host reads them once per window (no sync/step).
        self._window_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self._window_count = [0] * n
        self._log_sum = torch.zeros(n, dtype=torch.float64, device=self.device)
        self._log_count = [0] * n
        self._correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self._perm: tuple[int, Tensor] | None = None

    def _param_groups(self) -> list[dict[str, Any]]:
        cfg = self.config
        groups: list[dict[str, Any]] = []
        for idx, layer in self._trainable:
            if isinstance(layer, GMM):
                h, w, _ = layer.input_shape
                positions = h * w if layer.independent else 1
                for param, factor in (
                    (layer.means, cfg.lr_factor_means),
                    (layer.sqrt_precisions, cfg.lr_factor_precisions),
                    (layer.logits, cfg.lr_factor_weights),
                ):
                    scale = factor * positions
                    groups.append(
                        {
                            "params": [param],
                            "layer": idx,
                            "scale": scale,
                            "lr": cfg.lr_start * scale,
                        }
                    )
            else:
                groups.append(
                    {
                        "params": list(layer.parameters()),
                        "layer": idx,
                        "scale": None,
                        "lr": cfg.classifier_lr,
                    }
                )
        return groups

    def _sync_learning_rates(self) -> None:
        for group in self.optimizer.param_groups:
            if group["scale"] is not None:
                group["lr"] = self.schedules[group["layer"]].lr * group["scale"]
        for idx, gmm in self.model.gmm_layers():
            gmm.set_sigma_som(self.schedules[idx].sigma)

    def is_active(self, layer_index: int, step: int) -> bool:
        """Return whether a trainable layer updates at ``step`` (GMM layers start late)."""
        return step >= self._start_step.get(layer_index, 0)

    def _batch(self, step: int) -> tuple[Tensor, Tensor | None]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            n = self.images.shape[0]
            self._perm = (epoch, epoch_permutation(n, self.config.seed, epoch, self.device))
        b = self.config.batch_size
        index = self.dist.shard(self._perm[1][offset * b : (offset + 1) * b])
        y = self.labels[index] if self.labels is not None else None
        return self.images[index], y

    def train_step(self) -> None:
        """Run one SGD step on the next mini-batch (no host synchronisation).

        Every stage of the model's fast plan (:mod:`dcgmm.stages`) computes its output and
        its own layer's gradient in one go; nothing flows between layers but detached
        activations.
        """
        x, y = self._batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)  # layers still waiting keep grad None
        h = x
        slot = 0
        feed = ClassifierFeed(list(self.model.layers))
        for stage in self.model.stages:
            h = feed.input_for(stage.index, h)
            layer = stage.trainable
            if layer is None:
                h = stage.forward(h)
                feed.keep(stage.index, h)
                continue
            if self.is_active(stage.index, self.step):
                h, value = stage.train_step(h, y)
                self._record(slot, value.detach().double())
                if isinstance(layer, LinearClassifier) and y is not None:
                    self._correct += (h.reshape(h.shape[0], -1).argmax(1) == y).sum()
            else:
                with torch.no_grad():
                    h = stage.forward(h)
            feed.keep(stage.index, h)
            slot += 1
        self.dist.mean_gradients_(self.model)  # one all-reduce; no-op in a single process
        self.optimizer.step()
        for _, gmm in self.model.gmm_layers():
            gmm.project_()
        self.step += 1

    def _record(self, slot: int, value: Tensor) -> None:
        # GMM stages report their objective (a log-likelihood), the classifier its loss.
        self._window_sum[slot] += value
        self._log_sum[slot] += value
        self._window_count[slot] += 1
        self._log_count[slot] += 1

    def _end_windows(self) -> None:
        window = self.config.annealing_window
        due = [s for s, c in enumerate(self._window_count) if c >= window]
        if not due:
            return
        # Every rank has the same counts, so all reach this point together; deciding on the
        # loss averaged over ranks keeps the schedules identical everywhere.
        self.dist.mean_([self._window_sum])
        sums = self._window_sum.tolist()  # one host sync per window
        for slot in due:
            idx, layer = self._trainable[slot]
            mean = sums[slot] / self._window_count[slot]
            if not math.isfinite(mean):
                raise NumericalError(
                    f"layer {idx + 1} {layer.spec}: non-finite loss in the window ending at step "
                    f"{self.step}; lower the learning rate or check the data for NaN/Inf"
                )
            if isinstance(layer, GMM) and self.schedules[idx].end_window(mean):
                logger.debug("step %d layer %d: lr/sigma reduced", self.step, idx + 1)
            self._window_sum[slot] = 0.0
            self._window_count[slot] = 0
        self._sync_learning_rates()

    def metrics(self) -> dict[str, Any]:
        """Return the mean objective per layer since the last call, with lr and sigma_som.

        In a data-parallel job every rank must call it at the same step (it averages over
        ranks).
        """
        self.dist.mean_([self._log_sum, self._correct.reshape(1)])
        sums = self._log_sum.tolist()
        layers = []
        accuracy = None
        for slot, (idx, layer) in enumerate(self._trainable):
            count = self._log_count[slot]
            entry: dict[str, Any] = {
                "index": idx + 1,
                "spec": layer.spec,
                "loss": sums[slot] / count if count else None,
            }
            if isinstance(layer, GMM):
                entry["lr"] = self.schedules[idx].lr
                entry["sigma_som"] = self.schedules[idx].sigma
                entry["n_reductions"] = self.schedules[idx].n_reductions
            elif count:
                local_batch = self.config.batch_size // self.dist.world_size
                accuracy = float(self._correct) / (count * local_batch)
            layers.append(entry)
        self._log_sum.zero_()
        self._log_count = [0] * len(self._trainable)
        self._correct.zero_()
        epoch = self.step / self.steps_per_epoch
        return {
            "step": self.step,
            "epoch": epoch,
            "layers": layers,
            "classifier_accuracy": accuracy,
        }

    def state_dict(self) -> dict[str, Any]:
        """Return everything besides the model that a resumed run needs."""
        return {
            "step": self.step,
            "n_steps": self.n_steps,
            "epoch": self.step // self.steps_per_epoch,
            "seed": self.config.seed,
            "shuffle": "randperm(SeedSequence([seed, epoch]))",
            "schedules": {str(k): s.state_dict() for k, s in self.schedules.items()},
            "window_sum": self._window_sum.tolist(),
            "window_count": list(self._window_count),
            "log_sum": self._log_sum.tolist(),
            "log_count": list(self._log_count),
            "correct": float(self._correct),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the model is loaded separately)."""
        if state["n_steps"] != self.n_steps:
            raise ValueError(
                f"the checkpoint belongs to a run of {state['n_steps']} steps, this one has "
                f"{self.n_steps}; resume with the same data and --steps/--epochs"
            )
        self.step = state["step"]
        for key, value in state["schedules"].items():
            self.schedules[int(key)].load_state_dict(value)
        dev, f64 = self.device, torch.float64
        self._window_sum = torch.tensor(state["window_sum"], dtype=f64, device=dev)
        self._window_count = list(state["window_count"])
        self._log_sum = torch.tensor(state["log_sum"], dtype=f64, device=dev)
        self._log_count = list(state["log_count"])
        self._correct = torch.tensor(state["correct"], dtype=f64, device=dev)
        self._sync_learning_rates()

    def resume(self) -> None:
        """Load the trainer state of ``run_dir``'s checkpoint; drop metrics logged after it."""
        if self.run_dir is None:
            raise ValueError("resume needs a run_dir")
        self.load_state_dict(load_trainer_state(self.run_dir, model=self.model))
        path = self.run_dir / METRICS_FILE
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def save(self) -> None:
        """Write a checkpoint (atomically) if there is a run directory; rank 0 writes it."""
        if self.run_dir is None:
            return
        # Partial window sums differ per rank; averaging them now (the mean is linear) makes
        # rank 0's saved state the one every rank resumes from.
        self.dist.mean_([self._window_sum, self._log_sum, self._correct.reshape(1)])
        for name, param in self.model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise NumericalError(
                    f"parameter {name} is not finite at step {self.step}; not writing a broken "
                    "checkpoint (the previous one is kept)"
                )
        if self.dist.is_main:
            save_checkpoint(self.run_dir, self.model, self.state_dict())
        self.dist.barrier()

    def _log(self, record: dict[str, Any]) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def run(
        self,
        *,
        callback: Callable[[int, int, dict[str, Any] | None], None] | None = None,
        stop_at: int | None = None,
    ) -> None:
        """Train until the last step (or ``stop_at``), checkpointing and logging on the way.

        ``callback(step, n_steps, metrics_or_None)`` is called after every step, with the
        metrics dict every ``log_every`` steps (progress bars hook in here).
        """
        end = min(self.n_steps, stop_at) if stop_at is not None else self.n_steps
        while self.step < end:
            self.train_step()
            self._end_windows()
            record = None
            if self.step % self.config.log_every == 0 or self.step == self.n_steps:
                record = self.metrics()
                self._log(record)
            if self.step % self.config.checkpoint_every == 0 or self.step == end:
                self.save()  # also when stopping early at stop_at, so --resume can continue
            if callback is not None:
                callback(self.step, self.n_steps, record)

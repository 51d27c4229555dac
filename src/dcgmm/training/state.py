"""What a :class:`~dcgmm.training.trainer.Trainer` keeps on disk: checkpoints, resume, rollback.

A run directory's checkpoint holds the model and the trainer state (:meth:`state_dict`),
written atomically every ``checkpoint_every`` steps and when a run stops; :meth:`resume`
goes on from it exactly (the batches of a resumed run are those of an uninterrupted one), and
the numerical watchdog's rollback (:meth:`_roll_back`) reloads it with a lower learning rate.
"""

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dcgmm.io.run_files import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    atomic_write_bytes,
    read_config,
    remove_stale_temporaries,
    write_config,
)
from dcgmm.model import DCGMM
from dcgmm.training.annealing import SingleExpSchedule
from dcgmm.training.checkpoint import load_trainer_state, read_checkpoint, save_checkpoint
from dcgmm.training.config import TrainConfig
from dcgmm.training.distributed import DistContext
from dcgmm.training.metrics import TrainingMetrics
from dcgmm.training.watchdog import NonFinite, NumericalError, diagnose, nonfinite_parameters

__all__ = ["CheckpointedTraining", "TrainerFields"]

logger = logging.getLogger("dcgmm.training.trainer")


class TrainerFields:
    """What the parts of a :class:`~dcgmm.training.trainer.Trainer` share (set in ``__init__``).

    The base of its two halves, :class:`CheckpointedTraining` and
    :class:`~dcgmm.training.records.AnnealingRecords`, so each can be read (and type-checked)
    on its own.
    """

    model: DCGMM
    config: TrainConfig
    dist: DistContext
    step: int
    n_steps: int
    steps_per_epoch: int
    schedules: dict[int, SingleExpSchedule]
    _start_step: dict[int, int]
    _freeze_step: int  # the step from which GMM layers stop learning (n_steps: never)
    _window_sum: Tensor
    _window_count: list[int]
    _log_sum: Tensor
    _log_count: list[int]
    _correct: Tensor
    _settled: dict[int, int]

    def _sync_learning_rates(self) -> None:
        raise NotImplementedError  # Trainer's


class CheckpointedTraining(TrainerFields):
    """The persistence half of :class:`~dcgmm.training.trainer.Trainer` (a base class of it)."""

    device: torch.device
    run_dir: Path | None
    rollbacks: list[dict[str, Any]]
    _run_config: dict[str, Any]
    _lr_scale: dict[int, float]
    _skipped: set[int]
    _saved_step: int | None

    def _error(self, event: NonFinite, suffix: str = "") -> NumericalError:
        hint = ""
        if self.config.on_nonfinite == "stop" and event.cause != "data":
            hint = ", or let the run roll back (on_nonfinite='rollback', --on-nan rollback)"
        return NumericalError(f"{event.message()}{hint}{suffix}", event)

    def _objective_error(self, layer_index: int, x: Tensor, index: Tensor) -> NumericalError:
        event = diagnose(
            list(self.model.layers),
            step=self.step + 1,
            bad_layer=layer_index,
            what="objective",
            images=x,
            sample_index=index,
        )
        return self._error(event)

    def check_parameters(self) -> None:
        """Raise :class:`NumericalError` naming the lowest layer with a non-finite parameter."""
        flags = [torch.isfinite(p).all() for p in self.model.parameters()]
        if bool(torch.stack(flags).all()):  # one host sync
            return
        layers = list(self.model.layers)
        bad = next(i for i, layer in enumerate(layers) if nonfinite_parameters(layer))
        event = diagnose(layers, step=self.step, bad_layer=bad, what="parameters")
        kept = (
            f" (the checkpoint of step {self._saved_step} is kept)"
            if self._saved_step is not None
            else ""
        )
        raise self._error(event, f"; not writing a broken checkpoint{kept}")

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
            "rollbacks": self.rollbacks,
            "lr_scale": {str(k): v for k, v in self._lr_scale.items()},
            "skipped_steps": sorted(self._skipped),
            "settled_windows": {str(k): v for k, v in self._settled.items()},
            "layer_start_steps": {str(k): v for k, v in self._start_step.items()},
        }

    def load_state_dict(self, state: dict[str, Any], *, extend: bool = False) -> None:
        """Restore what :meth:`state_dict` returned (the model is loaded separately).

        With ``extend``, the trainer's budget may be longer than the checkpoint's run: the
        run goes on to the new budget, every GMM layer keeping the start step of its first
        budget (its delay is a fraction of that one).
        """
        if state["n_steps"] != self.n_steps and not (extend and state["n_steps"] < self.n_steps):
            raise ValueError(
                f"the checkpoint belongs to a run of {state['n_steps']} steps, this one has "
                f"{self.n_steps}; resume with the same data and --steps/--epochs"
                + ("" if extend else ", or extend the run to more steps")
            )
        if extend and self.config.freeze_gmm_at is not None:
            raise ValueError(
                "a run whose GMM layers freeze (freeze_gmm_at) cannot be extended: its GMM "
                "layers may have stopped already, and the new budget would move the freeze"
            )
        starts = state.get("layer_start_steps")  # absent before runs could be extended
        if starts is None:
            delays = {idx: start / self.n_steps for idx, start in self._start_step.items()}
            starts = {str(k): math.ceil(d * state["n_steps"] - 1e-9) for k, d in delays.items()}
        self._start_step = {int(k): int(v) for k, v in starts.items()}
        self.step = state["step"]
        for key, value in state["schedules"].items():
            self.schedules[int(key)].load_state_dict(value)
        dev, f64 = self.device, torch.float64
        self._window_sum = torch.tensor(state["window_sum"], dtype=f64, device=dev)
        self._window_count = list(state["window_count"])
        self._log_sum = torch.tensor(state["log_sum"], dtype=f64, device=dev)
        self._log_count = list(state["log_count"])
        self._correct = torch.tensor(state["correct"], dtype=f64, device=dev)
        # Checkpoints written before the watchdog had rollbacks lack these three.
        self.rollbacks = list(state.get("rollbacks", []))
        self._lr_scale = {int(k): v for k, v in state.get("lr_scale", {}).items()}
        self._skipped = set(state.get("skipped_steps", []))
        settled = state.get("settled_windows", {})  # absent before until_annealed existed
        self._settled = {idx: int(settled.get(str(idx), 0)) for idx in self.schedules}
        self._sync_learning_rates()

    def resume(self, *, extend: bool = False) -> None:
        """Load the trainer state of ``run_dir``'s checkpoint; drop metrics logged after it.

        With ``extend``, this trainer's budget (``config.steps``) may be longer than the
        run's: it trains on to it, and ``config.json`` records the new budget.
        """
        if self.run_dir is None:
            raise ValueError("resume needs a run_dir")
        state = load_trainer_state(self.run_dir, model=self.model)
        self.load_state_dict(state, extend=extend)
        if extend and self.dist.is_main and state["n_steps"] != self.n_steps:
            config = read_config(self.run_dir)
            write_config(self.run_dir, {**config, "train": self.config.to_dict()})
        self._saved_step = self.step
        if self.dist.is_main:
            for path in remove_stale_temporaries(self.run_dir, (MODEL_FILE, METRICS_FILE)):
                logger.info("removed %s, left by a write that a crash interrupted", path)
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop records after ``self.step`` from ``metrics.jsonl`` (they will be redone)."""
        if self.run_dir is None or not self.dist.is_main:
            return
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a run killed while appending it
            if record["step"] <= self.step:
                kept.append(line + "\n")
        atomic_write_bytes(path, "".join(kept).encode())

    def save(self) -> None:
        """Check the parameters, then write a checkpoint (atomically) if there is a run directory.

        Rank 0 writes it. Raises :class:`NumericalError`, writing nothing, if a parameter is
        not finite.
        """
        self.check_parameters()
        if self.run_dir is None:
            return
        # Partial window sums differ per rank; averaging them now (the mean is linear) makes
        # rank 0's saved state the one every rank resumes from.
        self.dist.mean_([self._window_sum, self._log_sum, self._correct.reshape(1)])
        if self.dist.is_main:
            if not (self.run_dir / CONFIG_FILE).exists():
                write_config(self.run_dir, self._run_config)
            save_checkpoint(self.run_dir, self.model, self.state_dict())
        self.dist.barrier()
        self._saved_step = self.step

    def _log(self, record: TrainingMetrics) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record.to_dict()) + "\n")

    def _roll_back(self, err: NumericalError) -> None:
        """Reload the last checkpoint after ``err`` (see ``TrainConfig``), or re-raise it."""
        event = err.event
        if self.config.on_nonfinite == "stop" or event is None:
            raise err
        if event.cause == "data":
            raise NumericalError(
                f"{err}; not rolling back: the same images come back every epoch", event
            ) from err
        if len(self.rollbacks) >= self.config.max_rollbacks:
            steps = ", ".join(str(r["step"]) for r in self.rollbacks)
            raise NumericalError(
                f"{err}. Gave up after {len(self.rollbacks)} rollbacks (steps {steps}); raise "
                "max_rollbacks or lower the learning rate",
                event,
            ) from err
        assert self.run_dir is not None  # checked in __init__
        tensors, metadata = read_checkpoint(self.run_dir)
        state = json.loads(metadata["trainer_state"])
        history = [*self.rollbacks, {**event.to_dict(), "checkpoint_step": state["step"]}]
        lr_scale, skipped = dict(self._lr_scale), {*self._skipped, event.offending_step}
        self.model.load_state_dict(tensors)
        self.load_state_dict(state)
        self._saved_step = self.step
        layer = event.layer - 1
        lr_scale[layer] = lr_scale.get(layer, 1.0) * self.config.rollback_lr_factor
        self.rollbacks, self._lr_scale, self._skipped = history, lr_scale, skipped
        self._sync_learning_rates()
        self._truncate_metrics()
        self.save()  # the same parameters, now with the rollback's decisions: a crash keeps them
        logger.warning(
            "%s. Rolled back to the checkpoint of step %d (rollback %d of at most %d); layer %d's "
            "learning rates are now x%g, and the batch of step %d is skipped",
            err,
            self.step,
            len(history),
            self.config.max_rollbacks,
            event.layer,
            lr_scale[layer],
            event.offending_step,
        )

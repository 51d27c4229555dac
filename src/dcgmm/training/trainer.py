"""Layer-wise SGD training of a DCGMM (spec §3), or stepwise EM for its GMM layers.

Every trainable layer ascends its own objective on the same mini-batch, with SingleExp
annealing per GMM layer (``TrainConfig.solver="em"``: GMM layers take stepwise-EM steps
towards the same objective's statistics instead, :mod:`dcgmm.layers.gmm_em`). A numerical
watchdog (:mod:`dcgmm.training.watchdog`) checks every step's objectives and every checkpoint's
parameters; a run with a run directory saves its starting
point, every ``checkpoint_every`` steps and its last step, each atomically, so a crash loses
at most the steps since the last checkpoint.
"""

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from dcgmm._allocator import retain_freed_memory
from dcgmm._validation import check_device
from dcgmm.io.run_files import (
    CONFIG_FILE,
    read_config,
)
from dcgmm.layers import GMM, LinearClassifier
from dcgmm.layers.base import TrainableLayer
from dcgmm.layers.gmm_em import stepwise_em_step_
from dcgmm.layers.gmm_gradients import Statistics
from dcgmm.model import DCGMM
from dcgmm.stages import Stage
from dcgmm.training.annealing import SingleExpSchedule
from dcgmm.training.batch_order import epoch_order
from dcgmm.training.checkpoint import (
    check_fits,
    run_config,
)
from dcgmm.training.config import TrainConfig
from dcgmm.training.distributed import DistContext
from dcgmm.training.metrics import TrainingMetrics
from dcgmm.training.records import AnnealingRecords
from dcgmm.training.state import CheckpointedTraining
from dcgmm.training.watchdog import NumericalError

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


def _check_arguments(
    model: DCGMM,
    config: TrainConfig,
    images: Tensor,
    labels: Tensor | None,
    run_dir: str | Path | None,
) -> None:
    """Raise a ValueError for arguments of :class:`Trainer` that do not fit together."""
    if images.dtype == torch.uint8:  # 0-255 pixels, converted batch by batch: check the shape
        model.check_input(images[:1].float().div_(255.0), "images")
    else:
        model.check_input(images, "images")
    if model.classifier is not None and labels is None:
        raise ValueError(
            f"model {model.spec!r} has a classifier layer and needs labels; got labels=None"
        )
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
    if config.on_nonfinite == "rollback" and run_dir is None:
        raise ValueError(
            "on_nonfinite='rollback' reloads the last checkpoint, so it needs a run_dir; "
            "pass run_dir or use on_nonfinite='stop'"
        )


class Trainer(AnnealingRecords, CheckpointedTraining):
    """Train a :class:`DCGMM` on in-memory images, layer by layer, with SGD and annealing.

    Parameters
    ----------
    model : DCGMM
        The model; it is moved to ``config.device``.
    config : TrainConfig
        Hyper-parameters.
    images : Tensor, shape (N, H, W, C)
        Training images, float in [0, 1], or uint8 0-255 (``load_dataset(...,
        dtype="uint8")``), converted to float32 one batch at a time.
    labels : Tensor, shape (N,), optional
        Integer labels; required if the model has a classifier layer.
    run_dir : Path, optional
        Where ``config.json``, checkpoints and ``metrics.jsonl`` go: a complete run that
        :func:`dcgmm.load_run` and every ``dcgmm`` command read. Nothing is written without
        one (and ``on_nonfinite="rollback"`` needs one). A folder that already holds a run
        must hold one of this model (resume it with :meth:`resume`).
    run_info : dict, optional
        More for ``config.json``: what only the caller knows (where the data came from, a
        preset name); see :func:`dcgmm.training.checkpoint.run_config`.
    dist : DistContext, optional
        This process's place in a data-parallel job (:mod:`dcgmm.training.distributed`): each rank
        trains on its share of every global batch of ``config.batch_size`` and the gradients
        are averaged; only rank 0 writes files. With ``config.data_shards`` equal to the
        number of ranks, ``images`` (and ``labels``) are this rank's block of the data only
        (:func:`dcgmm.io.data.load_dataset` with ``shard=``); otherwise every rank passes all.
    """

    def __init__(
        self,
        model: DCGMM,
        config: TrainConfig,
        images: Tensor,
        labels: Tensor | None = None,
        *,
        run_dir: str | Path | None = None,
        run_info: dict[str, Any] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        _check_arguments(model, config, images, labels, run_dir)
        retain_freed_memory()  # no page faults on every step's temporaries (dcgmm._allocator)
        self.dist = dist if dist is not None else DistContext()
        self.dist.check_batch_size(config.batch_size)
        self.device = check_device(config.device, "TrainConfig.device")
        self.model = model.to(self.device)
        self.dist.broadcast_(self.model)  # identical start on every rank, as DDP does
        self.config = config
        self.images = images.to(self.device)
        self.labels = labels.to(self.device) if labels is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        info = {"data": {"source": None, "n_samples": images.shape[0]}, **(run_info or {})}
        self._run_config = run_config(model, config, world_size=self.dist.world_size, info=info)
        self._check_run_dir_holds_this_model()
        # One block of the data per rank (config.data_shards), or all of it.
        self._one_block = self.dist.active and config.data_shards > 1
        if self._one_block and config.data_shards != self.dist.world_size:
            raise ValueError(
                f"data_shards is {config.data_shards} but the job has {self.dist.world_size} "
                "processes; each process holds one block, so they must be equal"
            )
        self.n_steps = config.total_steps(images.shape[0], one_block=self._one_block)
        self.steps_per_epoch = config.steps_per_epoch(images.shape[0], one_block=self._one_block)
        self.step = 0
        self._trainable = [
            (i, layer) for i, layer in enumerate(model.layers) if isinstance(layer, TrainableLayer)
        ]
        self._start_step = self._layer_start_steps()
        self._freeze_step = self._gmm_freeze_step()
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
        self._reset_watchdog_record()
        self._saved_step: int | None = None  # step of the checkpoint on disk, once known
        self.stopped_by: Literal["end", "stop_at", "time", "annealed"] = "end"  # why run() ended
        # Per GMM layer index: annealing windows in a row found stationary at the radius floor.
        self._settled = {idx: 0 for idx in self.schedules}
        self._warn_if_budget_too_short()

    def _check_run_dir_holds_this_model(self) -> None:
        """Refuse a run directory that already holds a run of another model (not overwritten)."""
        if self.run_dir is not None and (self.run_dir / CONFIG_FILE).exists():
            stored = read_config(self.run_dir)
            shape = json.dumps(stored.get("input_shape"))
            check_fits(self.model, {"spec": str(stored.get("spec")), "input_shape": shape},
                       self.run_dir)  # fmt: skip

    def _layer_start_steps(self) -> dict[int, int]:
        """Return the step at which each GMM layer and classifier (by index) starts."""
        config, model = self.config, self.model
        gmm_indices = [i for i, _ in model.gmm_layers()]
        delays = config.layer_delays or tuple(
            config.layer_delay * r for r in range(len(gmm_indices))
        )
        if len(delays) != len(gmm_indices):
            raise ValueError(
                f"layer_delays has {len(delays)} entries; {model.spec!r} has {len(gmm_indices)} "
                "GMM layers (one start fraction each, bottom first)"
            )
        classifiers = [i for i, layer in enumerate(model.layers)
                       if isinstance(layer, LinearClassifier)]  # fmt: skip
        starts = {**dict(zip(gmm_indices, delays, strict=True)),
                  **dict.fromkeys(classifiers, config.classifier_delay)}  # fmt: skip
        return {idx: math.ceil(delay * self.n_steps - 1e-9) for idx, delay in starts.items()}

    def _reset_watchdog_record(self) -> None:
        # The watchdog's record: rollbacks so far, learning-rate scales they left per layer
        # index, and the steps (from 1) whose batches are skipped. All saved in checkpoints.
        self.rollbacks: list[dict[str, Any]] = []
        self._lr_scale: dict[int, float] = {}
        self._skipped: set[int] = set()

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
            after_rollbacks = self._lr_scale.get(group["layer"], 1.0)
            if group["scale"] is not None:
                group["lr"] = self.schedules[group["layer"]].lr * group["scale"] * after_rollbacks
            else:
                group["lr"] = self.config.classifier_lr * after_rollbacks
        for idx, gmm in self.model.gmm_layers():
            gmm.set_sigma_som(self.schedules[idx].sigma)

    def is_active(self, layer_index: int, step: int) -> bool:
        """Return whether a trainable layer updates at ``step`` (GMM layers: start to freeze)."""
        frozen = layer_index in self.schedules and step >= self._freeze_step
        return step >= self._start_step.get(layer_index, 0) and not frozen

    def _batch(self, step: int) -> tuple[Tensor, Tensor | None, Tensor]:
        """Return this rank's (images, labels, row numbers) of the batch of ``step``."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        shards = self.config.data_shards
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, self._epoch_order(epoch))
        if shards == 1:
            b = self.config.batch_size
            index = self.dist.shard(self._perm[1][offset * b : (offset + 1) * b])
        else:  # b / S rows of every block this process holds, block after block
            b = self.config.batch_size // shards
            index = self._perm[1][:, offset * b : (offset + 1) * b].reshape(-1)
        y = self.labels[index] if self.labels is not None else None
        x = self.images[index]
        if x.dtype == torch.uint8:  # stored as 0-255: a quarter of the memory of float32
            x = x.to(torch.float32).div_(255.0)
        return x, y, index

    def _epoch_order(self, epoch: int) -> Tensor:
        """Return an epoch's sample order: (N,), or per block (blocks held, N // S) of rows."""
        rank = self.dist.rank if self._one_block else None
        return epoch_order(self.images.shape[0], self.config.seed, epoch, self.device,
                           shards=self.config.data_shards, only_block=rank)  # fmt: skip

    def train_step(self) -> None:
        """Run one SGD step on the next mini-batch.

        Every stage of the model's fast plan (:mod:`dcgmm.stages`) computes its output and
        its own layer's gradient in one go; nothing flows between layers but detached
        activations. Before the update, the watchdog reads one flag per trainable layer (the
        step's only host synchronisation) and raises :class:`NumericalError` if an objective
        is not finite, leaving the parameters as they were.
        """
        if self.step + 1 in self._skipped:  # a batch a rollback marked as offending
            self.step += 1
            return
        x, y, index = self._batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)  # layers still waiting keep grad None
        slots: list[int] = []  # of the active layers, in self._trainable
        values: list[Tensor] = []
        em_batches: list[tuple[int, Statistics]] = []  # solver "em": applied after the check
        slot_of = {index: slot for slot, (index, _) in enumerate(self._trainable)}

        def visit(stage: Stage, h: Tensor) -> Tensor:
            layer = stage.trainable
            if layer is None:
                return stage.forward(h)
            if not self.is_active(stage.index, self.step):
                with torch.no_grad():
                    return stage.forward(h)
            if self.config.solver == "em" and stage.gmm is not None:
                h, value, stats = stage.objective_and_statistics(h)
                em_batches.append((stage.index, stats))
            else:
                h, value = stage.train_step(h, y)
            slots.append(slot_of[stage.index])
            values.append(value.detach())
            if isinstance(layer, LinearClassifier) and y is not None:
                self._correct += (h.reshape(h.shape[0], -1).argmax(1) == y).sum()
            return h

        self.model.upward(x, visit)
        step_values = torch.stack(values)  # (n_active,)
        flags = (~torch.isfinite(step_values)).to(step_values.dtype)
        # One all-reduce carries the gradients and the flags, so every rank sees a NaN that
        # any rank met; a no-op in a single process.
        em_tensors = [t for _, stats in em_batches for t in stats]  # averaged like gradients
        self.dist.mean_gradients_(self.model, extra=[flags, *em_tensors])
        if bool(flags.any()):
            bad_slot = slots[int(flags.nonzero()[0, 0])]
            raise self._objective_error(self._trainable[bad_slot][0], x, index)
        for slot_index, value in zip(slots, step_values.double(), strict=True):
            self._record(slot_index, value)
        for layer_index, stats in em_batches:
            self._em_step(layer_index, stats)
        self.optimizer.step()
        for _, gmm in self.model.gmm_layers():
            gmm.project_()
        self.step += 1

    def _em_step(self, layer_index: int, stats: Statistics) -> None:
        """Take one stepwise-EM step of GMM layer ``layer_index`` (``solver="em"``).

        The step size follows the layer's own step count; a rollback scales it as it scales
        SGD's learning rates.
        """
        gmm = self.model.layers[layer_index]
        assert isinstance(gmm, GMM)
        size = self._em_step_size(layer_index) * self._lr_scale.get(layer_index, 1.0)
        stepwise_em_step_(gmm, stats, size, learn_weights=self.config.learns_weights)

    def run(
        self,
        *,
        callback: Callable[[int, int, TrainingMetrics | None], None] | None = None,
        stop_at: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        """Train until the last step, ``stop_at``, or ``max_seconds``; checkpoint on the way.

        A run stopped early saves a checkpoint at the step it stopped (``--resume`` goes on
        from there); :attr:`stopped_by` says why it stopped: ``"end"``, ``"stop_at"`` or
        ``"time"``.

        ``callback(step, n_steps, metrics_or_None)`` is called after every step, with the
        metrics dict every ``log_every`` steps (progress bars hook in here). After a rollback
        the next call's step is lower than the previous one's.

        Raises
        ------
        NumericalError
            When an objective or parameter is not finite and ``on_nonfinite`` is ``"stop"``
            (or rolling back cannot help, or ``max_rollbacks`` are used up).
        """
        if self.run_dir is not None and self._saved_step is None:
            self.save()  # the starting point: a rollback or --resume always has a checkpoint
        end = min(self.n_steps, stop_at) if stop_at is not None else self.n_steps
        self.stopped_by = "end" if end == self.n_steps else "stop_at"
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        while self.step < end:
            try:
                self.train_step()
                self._end_windows()
                record = None
                if self.step % self.config.log_every == 0 or self.step == self.n_steps:
                    record = self.metrics()
                    self._log(record)
                out_of_time = deadline is not None and self._all_ranks(
                    time.perf_counter() >= deadline
                )
                if out_of_time and self.step < end:
                    end, self.stopped_by = self.step, "time"
                if self.config.until_annealed and self.annealed and self.step < end:
                    end, self.stopped_by = self.step, "annealed"  # schedules: same on all ranks
                if self.step % self.config.checkpoint_every == 0 or self.step == end:
                    self.save()  # also when stopping early, so --resume can continue
            except NumericalError as err:
                self._roll_back(err)  # or re-raise
                continue
            if callback is not None:
                callback(self.step, self.n_steps, record)
        if self.stopped_by in ("end", "annealed") and self.dist.is_main:
            self._warn_if_unannealed()

    def _all_ranks(self, flag: bool) -> bool:
        """Return ``flag`` of rank 0 on every rank (clocks differ; the decision must not)."""
        if not self.dist.active:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        self.dist.broadcast_tensor_(value)
        return bool(value.item())

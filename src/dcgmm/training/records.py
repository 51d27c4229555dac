"""What a :class:`~dcgmm.training.trainer.Trainer` records: window sums, annealing, metrics.

Every trainable layer's objective is summed on the device, step by step; once a window is
full the host reads the sums (one synchronisation per window), the SingleExp schedules decide
(:mod:`dcgmm.training.annealing`), and whether every GMM layer reached its radius floor is what
``until_annealed`` and the warnings read. :meth:`AnnealingRecords.metrics` returns a
:class:`~dcgmm.training.metrics.TrainingMetrics`, whose ``to_dict()`` is a line of
``metrics.jsonl``.
"""

import logging
import math
import warnings

from torch import Tensor

from dcgmm.exceptions import AnnealingWarning
from dcgmm.layers import GMM, LinearClassifier
from dcgmm.layers.base import TrainableLayer
from dcgmm.layers.gmm_em import em_step_size
from dcgmm.training.metrics import LayerMetrics, TrainingMetrics
from dcgmm.training.state import TrainerFields

__all__ = ["AnnealingRecords"]

logger = logging.getLogger("dcgmm.training.trainer")


class AnnealingRecords(TrainerFields):
    """The bookkeeping half of :class:`~dcgmm.training.trainer.Trainer` (a base class of it)."""

    _trainable: list[tuple[int, TrainableLayer]]

    def _em_step_size(self, layer_index: int) -> float:
        """Return GMM layer ``layer_index``'s stepwise-EM step size now (its own step count)."""
        layer_step = max(self.step - self._start_step.get(layer_index, 0), 0)
        return em_step_size(layer_step, self.config.em_step_exponent)

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
            mean = sums[slot] / self._window_count[slot]  # finite: the watchdog saw each value
            if isinstance(layer, GMM):
                at_floor = self.schedules[idx].sigma <= self.config.sigma_floor
                stationary = self.schedules[idx].end_window(mean)
                self._settled[idx] = self._settled[idx] + 1 if stationary and at_floor else 0
                if stationary:
                    logger.debug("step %d layer %d: lr/sigma reduced", self.step, idx + 1)
            self._window_sum[slot] = 0.0
            self._window_count[slot] = 0
        self._sync_learning_rates()

    @property
    def annealed(self) -> bool:
        """Whether every GMM layer is at its radius floor and settled there (until_annealed)."""
        return all(n >= self.config.annealed_patience for n in self._settled.values())

    def unannealed_layers(self) -> list[tuple[int, str, float]]:
        """Return ``(1-based index, spec, sigma_som)`` of annealed GMM layers above the floor."""
        return [
            (idx + 1, gmm.spec, self.schedules[idx].sigma)
            for idx, gmm in self.model.gmm_layers()
            if gmm.objective == "annealed" and self.schedules[idx].sigma > self.config.sigma_floor
        ]

    def _gmm_freeze_step(self) -> int:
        """Return the step from which GMM layers stop learning (``n_steps``: they never do).

        Refuses the options that act on a classifier layer (``classifier_delay``, and
        ``freeze_gmm_at``, after which only it trains) for a model without one, and a freeze
        that comes before a GMM layer has started.
        """
        cfg = self.config
        if not any(isinstance(layer, LinearClassifier) for layer in self.model.layers):
            given = [name for name in ("classifier_delay", "freeze_gmm_at") if getattr(cfg, name)]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} act{'s' * (len(given) == 1)} on a classifier layer; "
                    f"{self.model.spec!r} has "
                    "none (add a C(...) layer, or leave them unset)"
                )
        freeze = cfg.freeze_gmm_at
        if freeze is None:
            return self.n_steps
        step = math.ceil(freeze * self.n_steps - 1e-9)
        gmm = dict(self.model.gmm_layers())
        late = [idx + 1 for idx, start in self._start_step.items() if idx in gmm and start >= step]
        if late:
            raise ValueError(
                f"freeze_gmm_at {freeze} (step {step}) comes before GMM layer(s) {late} start "
                "(their layer delay): they would never learn. Raise freeze_gmm_at"
            )
        return step

    def annealing_shortfall(self) -> list[tuple[int, str, int, int]]:
        """Return the GMM layers whose radius cannot reach its floor within the budget.

        Each entry is ``(layer number, spec, reductions possible, reductions needed)``,
        whatever the data: the radius shrinks by ``gamma`` at most once per window, from the
        third window after the layer starts (spec §3), so a layer that starts late in a short
        budget cannot anneal.
        """
        cfg, short = self.config.annealing, []
        gmm = dict(self.model.gmm_layers())
        for index, schedule in self.schedules.items():
            if schedule.sigma <= cfg.sigma_floor:
                continue
            needed = math.ceil(math.log(cfg.sigma_floor / schedule.sigma) / math.log(cfg.gamma))
            windows = (self._freeze_step - self._start_step[index]) // cfg.window
            possible = max(windows - 2, 0)
            if possible < needed:
                short.append((index + 1, gmm[index].spec, possible, needed))
        return short

    def _warn_if_budget_too_short(self) -> None:
        short = self.annealing_shortfall()
        if short:
            layers = "; ".join(
                f"layer {n} {spec} can shrink its radius {possible} times, {needed} are needed"
                for n, spec, possible, needed in short
            )
            warnings.warn(
                f"this budget of {self._freeze_step} steps{self._before_freeze()} cannot finish "
                f"the annealing: {layers} "
                f"(one reduction per {self.config.annealing.window}-step window at most, from "
                "the third after the layer starts). Raise the budget or lower the layer's delay",
                AnnealingWarning,
                stacklevel=3,
            )

    def _before_freeze(self) -> str:
        return " before the GMM layers freeze" if self._freeze_step < self.n_steps else ""

    def _warn_if_unannealed(self) -> None:
        late = self.unannealed_layers()
        if late:
            layers = ", ".join(f"layer {i} {spec} at {sigma:.3g}" for i, spec, sigma in late)
            warnings.warn(
                f"the annealing did not finish in {self.step} steps: sigma_som of {layers} "
                f"(floor {self.config.sigma_floor}). Its scores and samples are those of a "
                "blurred model: train longer (--steps, --epochs) or until annealed "
                "(--until-annealed, TrainConfig(until_annealed=True))",
                AnnealingWarning,
                stacklevel=3,
            )

    def metrics(self) -> TrainingMetrics:
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
            mean = sums[slot] / count if count else None
            if isinstance(layer, GMM):  # maximised objective, annealed radius, a rate
                em = self.config.solver == "em"  # EM has a step size, not a learning rate
                schedule = self.schedules[idx]
                layers.append(LayerMetrics(
                    idx + 1, layer.spec, True, objective=mean,
                    em_step_size=self._em_step_size(idx) if em else None,
                    lr=None if em else schedule.lr, sigma_som=schedule.sigma,
                    n_reductions=schedule.n_reductions,
                ))  # fmt: skip
                continue
            layers.append(LayerMetrics(idx + 1, layer.spec, False, cross_entropy=mean))
            if count:
                local_batch = self.config.batch_size // self.dist.world_size
                accuracy = float(self._correct) / (count * local_batch)
        self._log_sum.zero_()
        self._log_count = [0] * len(self._trainable)
        self._correct.zero_()
        return TrainingMetrics(self.step, self.step / self.steps_per_epoch, tuple(layers), accuracy)

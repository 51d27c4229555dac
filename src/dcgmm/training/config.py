"""Training options of a DCGMM run: :class:`TrainConfig` and the presets' recipe factors."""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from dcgmm.training.annealing import AnnealingConfig

__all__ = ["PRESET_TRAIN_OVERRIDES", "TrainConfig", "options_for_solver", "preset_config"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyper-parameters of a training run; defaults are the authors' recipes (spec §3).

    Give exactly one of ``epochs`` and ``steps``. Learning rates of a GMM layer are
    ``lr * lr_factor_*`` with ``lr`` annealed from ``lr_start`` to ``lr_floor``; independent
    layers multiply them by H*W to undo the mean over positions.

    ``on_nonfinite`` says what a NaN or infinity in a layer's objective or parameters does:
    ``"stop"`` raises :class:`~dcgmm.training.watchdog.NumericalError` naming the layer and the step
    (nothing broken is saved); ``"rollback"`` (needs a run directory) reloads the last
    checkpoint, multiplies the learning rates of the layer named by ``rollback_lr_factor``
    for the rest of the run, skips the batch that produced the value, and continues; after
    ``max_rollbacks`` rollbacks, or when the batch itself holds non-finite pixels (a rollback
    cannot fix data), it stops as ``"stop"`` does.

    GMM layer ``r`` (0-based, bottom first) starts training after ``layer_delay * r`` of the
    steps, or after ``layer_delays[r]`` of them when that tuple is given (the recipes' delays
    are not always evenly spaced: preset G's are 0, 0.1, 0.15, 0.2); the classifier trains
    from the first step, or after ``classifier_delay`` of them.

    ``freeze_gmm_at = f`` stops every GMM layer learning after the fraction ``f`` of the
    steps; the classifier layer trains on alone, over features that no longer move (a model
    without a classifier layer is refused). Unset, the GMM layers learn to the end. With
    ``classifier_delay = f`` as well, training is two stages: the GMM layers alone, then a
    classifier that starts from its initial weights on the frozen features (one trained from
    the first step carries weights fitted to the blurred features of the early annealing).

    ``until_annealed=True`` stops before ``steps`` (or ``epochs``, the upper bound) once every
    GMM layer's radius is at ``sigma_floor`` and its objective has stopped rising: the
    annealing schedule found it stationary (:class:`~dcgmm.training.annealing.SingleExpSchedule`) in
    ``annealed_patience`` windows in a row at the floor. A run that ends with a layer above
    its floor warns (:class:`~dcgmm.exceptions.AnnealingWarning`), naming the layer.

    ``solver`` says how a GMM layer learns from its batch: ``"sgd"`` (the papers' method, the
    default) steps along its objective's gradient; ``"em"`` takes a stepwise-EM step of size
    ``(t + 2) ** -em_step_exponent`` towards the same objective's sufficient statistics
    (:mod:`dcgmm.layers.gmm_em`; t counts the layer's own steps), with the same annealing of
    the radius. EM has no learning rates: under it ``lr_start``, ``lr_floor``,
    ``lr_factor_means`` and ``lr_factor_precisions`` must stay at their defaults, and
    ``lr_factor_weights`` is 0 (keep the mixing weights fixed, as the recipes' lambda_pi = 0)
    or its default (learn them). The classifier layer is trained by SGD under both.

    ``data_shards = S`` cuts the training images into S contiguous blocks of ``N // S``
    (the remainder is dropped), each shuffled on its own every epoch; a batch takes
    ``batch_size / S`` images of every block. Under ``torchrun`` with S processes each one
    then holds only its block (``dcgmm train`` sets S to the number of processes by itself),
    and a one-process run with the same S sees exactly the same batches.
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
    layer_delays: tuple[float, ...] | None = None
    classifier_delay: float = 0.0
    checkpoint_every: int = 1000
    log_every: int = 100
    freeze_gmm_at: float | None = None
    until_annealed: bool = False
    annealed_patience: int = 3
    on_nonfinite: Literal["stop", "rollback"] = "stop"
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    device: str = "cpu"
    solver: Literal["sgd", "em"] = "sgd"
    em_step_exponent: float = 0.6
    data_shards: int = 1

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"give exactly one of epochs and steps; got epochs={self.epochs}, "
                f"steps={self.steps}. The recipes train 25-80 epochs"
            )
        for name in (
            "batch_size",
            "annealing_window",
            "checkpoint_every",
            "log_every",
            "max_rollbacks",
            "annealed_patience",
            "data_shards",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if (self.epochs or 1) <= 0 or (self.steps or 1) <= 0:
            raise ValueError("epochs and steps must be positive")
        if not 0 <= self.classifier_delay < 1:
            raise ValueError(f"classifier_delay must be in [0, 1); got {self.classifier_delay}")
        if not 0 <= self.layer_delay < 1:
            raise ValueError(f"layer_delay must be in [0, 1); got {self.layer_delay}")
        if self.layer_delays is not None:
            delays = tuple(float(d) for d in self.layer_delays)  # a JSON list after a resume
            object.__setattr__(self, "layer_delays", delays)
            if not all(0 <= d < 1 for d in delays):
                raise ValueError(
                    f"layer_delays must each be in [0, 1) (fractions of the run); got {delays}"
                )
        self._check_freeze()
        if self.on_nonfinite not in ("stop", "rollback"):
            raise ValueError(
                f"on_nonfinite must be 'stop' or 'rollback'; got {self.on_nonfinite!r}"
            )
        if not 0 < self.rollback_lr_factor <= 1:
            raise ValueError(f"rollback_lr_factor must be in (0, 1]; got {self.rollback_lr_factor}")
        for f in fields(self):
            if f.name.startswith("lr_factor") and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0; got {getattr(self, f.name)}")
        AnnealingConfig(**self._annealing_kwargs())  # validates the schedule's fields
        self._check_solver()
        if self.batch_size % self.data_shards:
            raise ValueError(
                f"batch_size {self.batch_size} must be divisible by data_shards "
                f"{self.data_shards}: a batch takes an equal share of every block"
            )

    def _check_freeze(self) -> None:
        if self.freeze_gmm_at is None:
            return
        if not 0 < self.freeze_gmm_at < 1:
            raise ValueError(
                f"freeze_gmm_at must be in (0, 1) (a fraction of the run); got "
                f"{self.freeze_gmm_at}. Leave it unset for GMM layers that learn to the end"
            )
        if self.until_annealed:
            raise ValueError(
                "until_annealed ends the run once the GMM layers settle, freeze_gmm_at trains "
                "the classifier on alone after they stop: give one of them"
            )

    def _check_solver(self) -> None:
        if self.solver not in ("sgd", "em"):
            raise ValueError(f"solver must be 'sgd' or 'em'; got {self.solver!r}")
        default = {f.name: f.default for f in fields(self)}
        if self.solver == "sgd":
            if self.em_step_exponent != default["em_step_exponent"]:
                raise ValueError(
                    "em_step_exponent sets the step size of solver 'em'; with solver 'sgd' "
                    "the learning rates (lr_start, lr_floor, lr_factor_*) set it"
                )
            return
        if not 0.5 < self.em_step_exponent <= 1.0:
            raise ValueError(
                f"em_step_exponent must be in (0.5, 1] (stepwise EM converges for those); "
                f"got {self.em_step_exponent}"
            )
        sgd_only = [
            name
            for name in ("lr_start", "lr_floor", "lr_factor_means", "lr_factor_precisions")
            if getattr(self, name) != default[name]
        ]
        if self.lr_factor_weights not in (0.0, default["lr_factor_weights"]):
            sgd_only.append("lr_factor_weights (0 keeps the weights fixed under EM)")
        if sgd_only:
            raise ValueError(
                f"solver 'em' has no learning rates, so {', '.join(sgd_only)} would do nothing; "
                "leave them at their defaults, or set em_step_exponent (the EM step size)"
            )

    @property
    def learns_weights(self) -> bool:
        """Whether GMM layers learn their mixing weights (not under lr_factor_weights = 0)."""
        return self.lr_factor_weights > 0

    def _annealing_kwargs(self) -> dict[str, Any]:
        return {
            "lr_start": self.lr_start,
            "lr_floor": self.lr_floor,
            "sigma_floor": self.sigma_floor,
            "window": self.annealing_window,
            "delta": self.annealing_delta,
            "gamma": self.annealing_gamma,
            "rule": "every_window" if self.solver == "em" else "stationary",
        }

    @property
    def annealing(self) -> AnnealingConfig:
        """The SingleExp schedule's parameters."""
        return AnnealingConfig(**self._annealing_kwargs())

    def steps_per_epoch(self, n_samples: int, *, one_block: bool = False) -> int:
        """Return the number of full batches in one pass (the remainder is dropped).

        ``n_samples`` is all the data, or with ``one_block`` one process's block of
        ``data_shards`` (each batch takes ``batch_size / data_shards`` of a block).
        """
        total = n_samples * self.data_shards if one_block else n_samples
        if total < self.batch_size:
            raise ValueError(
                f"the dataset has {total} samples, fewer than one batch of "
                f"{self.batch_size}; lower --batch-size or use more data"
            )
        block = n_samples if one_block else n_samples // self.data_shards
        return block // (self.batch_size // self.data_shards)

    def total_steps(self, n_samples: int, *, one_block: bool = False) -> int:
        """Return the number of SGD steps of the whole run (see :meth:`steps_per_epoch`)."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * self.steps_per_epoch(n_samples, one_block=one_block)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


# The recipes' per-configuration learning-rate factors (spec §3).
PRESET_TRAIN_OVERRIDES: dict[str, dict[str, float]] = {
    "A": {"lr_factor_weights": 0.5, "lr_factor_precisions": 0.5},
    "F": {"lr_factor_weights": 0.0},
    "G": {"lr_factor_weights": 0.0},
}


def options_for_solver(options: dict[str, Any], solver: str) -> dict[str, Any]:
    """Return the TrainConfig ``options`` (a recipe's) that act under ``solver``.

    Under ``"em"`` the SGD learning rates and factors do nothing and are dropped, except
    ``lr_factor_weights = 0`` (the mixing weights stay fixed), which EM honours.
    """
    if solver != "em":
        return dict(options)
    return {
        k: v
        for k, v in options.items()
        if not k.startswith("lr_") or (k == "lr_factor_weights" and v == 0)
    }


def preset_config(preset: str | None, config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """Apply a preset's recipe factors to ``config``, except fields the user set explicitly.

    Under ``solver="em"`` only the factor that EM honours applies (fixed mixing weights).
    """
    overrides = {
        k: v for k, v in PRESET_TRAIN_OVERRIDES.get(preset or "", {}).items() if k not in explicit
    }
    overrides = options_for_solver(overrides, config.solver)
    return replace(config, **overrides) if overrides else config  # type: ignore[arg-type]

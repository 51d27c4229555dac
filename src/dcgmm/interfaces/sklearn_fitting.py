r"""How :class:`~dcgmm.interfaces.sklearn_api.SGDGaussianMixture` fits: checks, start, schedule.

The parameter checks, the initialisation, the two solvers' passes, SGD's schedule and the
fitted attributes, as a base class of the estimator.

Why SGD falls short of EM on images (4,000 MNIST digits, K = 49, measured by
``benchmarks/sklearn_em.py``): standardising lets the precision bound follow each pixel's
spread, so the near-constant background pixels get precisions far above 20 in pixel units
and test digits fall outside them (-305.9 nats); without it, 50 SGD epochs reach 94.2 and
250 epochs 159.1: small SGD steps and an annealing that must run its course need many
passes; the exact-log-likelihood objective (no annealing) stops at 135.0 after 50. Stepwise
EM moves to each batch's responsibility-weighted statistics (a step of 0.66 at first) and
gets 207.2 in 10 passes (scikit-learn's batch EM: 193.5, its floor added, not clipped).

Choices a scikit-learn user should know about:

- Means start at k-means++ seeds (K data points, spread out; ``GaussianMixture``'s
  ``init_params="k-means++"``), precisions at the upper bound. The spec's
  :math:`U[-0.1, 0.1]` assumes pixels in [0, 1]; un-annealed objectives need components
  that start apart (near-identical ones never win a sample); and uniformly drawn data
  points left two components in one cluster for one seed in four on a 2-D mixture.
- The precision bound keeps SGD stable (a mean's step scales with its precision). The
  spec's 20 assumes [0, 1] pixels; standardising makes it a bound relative to each
  feature's spread, whatever the units.
- Within a pass the last ``N mod batch_size`` samples of the shuffled order are left out
  (a different remainder each epoch).
- Covariances are diagonal only; computation runs on the CPU.
"""

import inspect
import math
import numbers
import warnings
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Float
from torch import Tensor

from dcgmm._numerics import PRECISION_LOWER_BOUND, SQRT_PRECISION_LOWER_BOUND
from dcgmm.interfaces._sklearn import (
    ConvergenceWarning,
    check_is_fitted,
    kmeans_plusplus,
    validate_data,
)
from dcgmm.layers.draws import draw_categorical
from dcgmm.layers.gmm import GMM, OBJECTIVES, Objective
from dcgmm.layers.gmm_em import em_step_size, stepwise_em_step_
from dcgmm.layers.torus import torus_grid_side
from dcgmm.training.annealing import AnnealingConfig, SingleExpSchedule
from dcgmm.training.watchdog import NumericalError

__all__ = [
    "DTYPES",
    "LR_FLOOR_RATIO",
    "SOLVER_PARAMETERS",
    "MixtureFitting",
    "check_number",
    "standardisation",
    "torch_generator",
]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

# The parameters only one solver uses: set for the other, they are refused, not ignored.
SOLVER_PARAMETERS = {
    "sgd": ("objective", "learning_rate", "learning_rate_floor", "lr_factor_means",
            "lr_factor_precisions", "lr_factor_weights", "annealing_window"),
    "em": ("step_exponent", "tol"),
}  # fmt: skip

# The recipe's learning rate anneals from 0.011 to 0.01 (spec §3); a user-chosen start keeps
# that ratio unless a floor is given.
LR_FLOOR_RATIO = 0.01 / 0.011


def standardisation(
    x: Float[np.ndarray, "N D"],
) -> tuple[Float[np.ndarray, " D"], Float[np.ndarray, " D"]]:
    """Return the per-feature mean and scale that map ``x`` to zero mean and unit variance.

    A feature whose standard deviation is at the level of rounding noise is constant; its
    scale stays 1 (as in ``StandardScaler``), so it is only shifted.
    """
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    constant = std <= 10.0 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)


class MixtureFitting:
    """The fitting half of :class:`~dcgmm.interfaces.sklearn_api.SGDGaussianMixture` (its base).

    The hyper-parameters below are the estimator's (its ``__init__`` sets them).
    """

    n_components: int
    solver: Literal["em", "sgd"]
    objective: Objective
    batch_size: int
    max_epochs: int
    learning_rate: float
    learning_rate_floor: float | None
    lr_factor_means: float
    lr_factor_precisions: float
    lr_factor_weights: float
    annealing_window: int
    step_exponent: float
    tol: float
    precision_upper_bound: float
    standardize: bool
    random_state: Any
    dtype: Literal["float32", "float64"]
    lower_bound_: float  # fitted (annotations only: check_is_fitted reads the attributes)
    converged_: bool

    @classmethod
    def _defaults(cls) -> dict[str, object]:
        return {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def _fit_passes(self, z: Tensor) -> None:
        """Run ``fit``'s passes over ``z``; warn (ConvergenceWarning) if they did not converge."""
        previous = -math.inf
        for _ in range(self.max_epochs):
            self._run_pass(z)
            if self.solver == "em":  # stop once a pass gains less than tol, relatively
                if self.lower_bound_ - previous < self.tol * (1.0 + abs(self.lower_bound_)):
                    self._converged = True
                    break
                previous = self.lower_bound_
        self._export_parameters()
        if not self.converged_:
            warnings.warn(
                f"SGDGaussianMixture (solver={self.solver!r}) did not converge in "
                f"{self.max_epochs} epochs: "
                + ("the last pass still gained more than tol" if self.solver == "em" else
                   "the annealing had not finished")
                + "; raise max_epochs",
                ConvergenceWarning,
                stacklevel=3,
            )  # fmt: skip

    @torch.no_grad()
    def _draw(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return ``n`` exact draws from the mixture (in input units) and their components."""
        layer, k = self._layer, int(self.n_components)
        weights = layer.weights.detach().expand(n, k)
        labels = draw_categorical(weights, generator=generator)  # (n,)
        # A one-hot control makes the layer emit exactly the drawn component.
        control = torch.nn.functional.one_hot(labels, k).to(weights.dtype)
        z = layer.sample(
            control.reshape(n, 1, 1, k), generator=generator, noise_divisor=1.0,
            noise_at_bound=True,
        )  # fmt: skip
        x = self.feature_mean_ + self.feature_scale_ * z.reshape(n, -1).double().numpy()
        return x, labels.numpy()

    def _validate_params(self) -> None:
        for name in ("n_components", "batch_size", "max_epochs", "annealing_window"):
            check_number(name, getattr(self, name), integer=True)
        for name in ("learning_rate", "precision_upper_bound"):
            check_number(name, getattr(self, name), integer=False)
        if self.learning_rate_floor is not None:
            check_number("learning_rate_floor", self.learning_rate_floor, integer=False)
            if self.learning_rate_floor > self.learning_rate:
                raise ValueError(
                    f"learning_rate_floor must not exceed learning_rate; got "
                    f"learning_rate_floor={self.learning_rate_floor}, "
                    f"learning_rate={self.learning_rate}. Lower the floor or leave it None"
                )
        for name in ("lr_factor_means", "lr_factor_precisions", "lr_factor_weights"):
            check_number(name, getattr(self, name), integer=False, allow_zero=True)
        if self.precision_upper_bound <= PRECISION_LOWER_BOUND:
            raise ValueError(
                f"precision_upper_bound must exceed the lower bound {PRECISION_LOWER_BOUND}; "
                f"got {self.precision_upper_bound}"
            )
        if self.solver not in ("em", "sgd"):
            raise ValueError(f"solver must be 'em' or 'sgd'; got {self.solver!r}")
        other = "sgd" if self.solver == "em" else "em"
        changed = [
            name
            for name in SOLVER_PARAMETERS[other]
            if getattr(self, name) != self._defaults()[name]
        ]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} {'applies' if len(changed) == 1 else 'apply'} to "
                f"solver={other!r}, not {self.solver!r}; pass solver={other!r} or leave "
                f"{'it' if len(changed) == 1 else 'them'} at the default"
            )
        if not 0.5 < float(self.step_exponent) <= 1.0:
            raise ValueError(f"step_exponent must be in (0.5, 1]; got {self.step_exponent}")
        check_number("tol", self.tol, integer=False, allow_zero=True)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if self.solver == "sgd" and self.objective == "annealed":
            torus_grid_side(int(self.n_components))  # a non-square K raises, with a hint
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}; got {self.dtype!r}")

    def _validate_x(self, X: npt.ArrayLike, *, reset: bool) -> Float[np.ndarray, "N D"]:
        # Checks finiteness and 2-D shape; sets (reset) or checks n_features_in_.
        x: np.ndarray = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
        return x

    def _validated_tensor(self, X: npt.ArrayLike) -> Float[Tensor, "N 1 1 D"]:
        check_is_fitted(self)
        x = self._validate_x(X, reset=False)
        return self._to_tensor(x).reshape(x.shape[0], 1, 1, x.shape[1])

    def _standardised(self, x: Float[np.ndarray, "N D"]) -> Float[np.ndarray, "N D"]:
        z = x.astype(np.float64)  # a copy: the caller's array (maybe a read-only memmap) stays
        z -= self.feature_mean_
        z /= self.feature_scale_
        return z

    def _to_tensor(self, x: Float[np.ndarray, "N D"]) -> Float[Tensor, "N D"]:
        return torch.from_numpy(self._standardised(x)).to(DTYPES[self.dtype])

    def _annealing_config(self) -> AnnealingConfig:
        # Plain Python numbers: parameters may be numpy scalars (from a grid search).
        start, floor = float(self.learning_rate), self.learning_rate_floor
        return AnnealingConfig(
            lr_start=start,
            lr_floor=start * LR_FLOOR_RATIO if floor is None else float(floor),
            window=int(self.annealing_window),
        )

    def _initialise(
        self, x: Float[np.ndarray, "N D"], rng: np.random.RandomState
    ) -> Float[Tensor, "N D"]:
        """Set up standardisation, layer and schedule on the first data; return them as z."""
        n, d = x.shape
        if n < self.n_components:
            raise ValueError(
                f"the initial means are {self.n_components} distinct samples, so fit needs "
                f"n_samples >= n_components; got n_samples={n}, "
                f"n_components={self.n_components}. Pass more data or fewer components"
            )
        if self.standardize:
            self.feature_mean_, self.feature_scale_ = standardisation(x.astype(np.float64))
        else:
            self.feature_mean_, self.feature_scale_ = np.zeros(d), np.ones(d)
        objective: Objective = self.objective if self.solver == "sgd" else "loglik"
        # The layer's own initialisation is overwritten below; a private generator keeps it
        # from consuming the global torch RNG.
        k = int(self.n_components)
        layer = GMM((1, 1, d), k, objective=objective, generator=torch.Generator())
        layer = layer.to(DTYPES[self.dtype])
        z = self._standardised(x)
        seeds, _ = kmeans_plusplus(z, k, random_state=rng)
        with torch.no_grad():
            layer.means.copy_(torch.from_numpy(seeds))
            # Narrow components learn their means fastest (a mean's step scales with its
            # precision); the precisions then relax. Starting from per-cell variances instead
            # did worse under annealing (measured on 2-D mixtures, K = 4 and 9).
            layer.sqrt_precisions.fill_(math.sqrt(self.precision_upper_bound))
        self._layer = layer
        self._rng = rng
        self._converged = False
        if self.solver == "em":
            # EM starts from the seeds with every component as wide as the data.
            variance = torch.from_numpy(z.var(0)).to(layer.means.dtype)
            floor = 1.0 / float(self.precision_upper_bound)
            with torch.no_grad():
                layer.sqrt_precisions.copy_(variance.clamp_min(floor).rsqrt().expand(k, d))
        self._schedule = SingleExpSchedule.start(self._annealing_config(), layer.sigma_som_value)
        self._window_sum = torch.zeros((), dtype=torch.float64)
        self._window_count = 0
        self._annealing_finished = False
        self.n_iter_ = 0
        self.n_steps_ = 0
        return torch.from_numpy(z).to(DTYPES[self.dtype])

    def _run_pass(self, z: Float[Tensor, "N D"]) -> None:
        """Take ``N // batch_size`` SGD steps (at least one) over a fresh shuffle of ``z``."""
        n = z.shape[0]
        size = min(int(self.batch_size), n)
        n_batches = n // size
        order = torch.from_numpy(self._rng.permutation(n))
        pass_sum = torch.zeros((), dtype=torch.float64)
        for i in range(n_batches):
            rows = z[order[i * size : (i + 1) * size]]
            batch = rows.reshape(size, 1, 1, -1)  # (B, 1, 1, D)
            if self.solver == "em":  # the objective is the exact log-likelihood
                _, objective, stats = self._layer.forward_and_statistics(batch)
                step = em_step_size(self.n_steps_, float(self.step_exponent))
                floor = 1.0 / float(self.precision_upper_bound)
                stepwise_em_step_(self._layer, stats, step, variance_floor=floor)
                pass_sum += objective.double()  # before the step, as EM's lower bound
                self.n_steps_ += 1
                continue
            _, objective = self._layer.forward_and_grad(batch)  # fills .grad, no autograd
            self._sgd_step()
            value = objective.double()
            pass_sum += value
            self._window_sum += value
            self._window_count += 1
            self.n_steps_ += 1
            if self._window_count == self.annealing_window:
                self._end_window()
        self.n_iter_ += 1
        log_det = float(np.log(self.feature_scale_).sum())
        self.lower_bound_ = pass_sum.item() / n_batches - log_det

    @torch.no_grad()
    def _sgd_step(self) -> None:
        # theta <- theta - lr * lambda_theta * grad, then the precision bounds: what
        # torch.optim.SGD without momentum does, whose first construction alone imports
        # torch._dynamo (2 s measured on 2 cores). The layer's project_() has the spec's
        # pixel bound; ours is a parameter.
        layer, lr = self._layer, self._schedule.lr
        for param, factor in (
            (layer.means, self.lr_factor_means),
            (layer.sqrt_precisions, self.lr_factor_precisions),
            (layer.logits, self.lr_factor_weights),
        ):
            assert param.grad is not None  # forward_and_grad sets every gradient
            param.add_(param.grad, alpha=-lr * float(factor))
        upper = math.sqrt(self.precision_upper_bound)
        layer.sqrt_precisions.clamp_(SQRT_PRECISION_LOWER_BOUND, upper)

    def _end_window(self) -> None:
        mean = self._window_sum.item() / self._window_count  # one host sync per window
        if not math.isfinite(mean):
            raise NumericalError(
                f"non-finite objective in the window ending at step {self.n_steps_}; lower "
                "learning_rate or precision_upper_bound"
            )
        schedule = self._schedule
        at_floors = (
            schedule.lr <= schedule.config.lr_floor
            and schedule.sigma <= schedule.config.sigma_floor
        )
        if schedule.end_window(mean) and at_floors:
            self._annealing_finished = True  # a whole window at the floors without progress
        self._window_sum.zero_()
        self._window_count = 0
        self._layer.set_sigma_som(schedule.sigma)

    def _export_parameters(self) -> None:
        # Fitted attributes in input units: z = (x - m) / c turns N(z | mu, 1/s^2) into
        # N(x | m + c mu, c^2 / s^2).
        layer, mean, scale = self._layer, self.feature_mean_, self.feature_scale_
        self.weights_ = torch.softmax(layer.logits.detach().double(), dim=-1).numpy()
        self.means_ = mean + scale * layer.means.detach().double().numpy()
        sqrt_precisions = layer.sqrt_precisions.detach().double().numpy()
        self.precisions_cholesky_ = sqrt_precisions / scale
        self.precisions_ = self.precisions_cholesky_**2
        self.covariances_ = 1.0 / self.precisions_
        self.converged_ = self._converged if self.solver == "em" else self._annealing_finished


def check_number(name: str, value: object, *, integer: bool, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a (positive, or non-negative) int or real number.

    Numpy scalars count (a grid search over ``np.arange`` passes ``np.int64``), bools do not.

    Raises
    ------
    TypeError
        If ``value`` is not an int (``integer``) or a real number; bools are neither.
    ValueError
        If it is not positive (is negative, with ``allow_zero``) or is NaN.
    """
    kind, kind_name = (numbers.Integral, "int") if integer else (numbers.Real, "float")
    sign = "non-negative" if allow_zero else "positive"
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {sign} {kind_name}; got {value!r}")
    number = float(value)
    ok = number >= 0 if allow_zero else number > 0
    if not ok:  # also rejects NaN
        raise ValueError(f"{name} must be a {sign} {kind_name}; got {value!r}")


def torch_generator(rng: np.random.RandomState) -> torch.Generator:
    """Return a torch generator seeded from a numpy random state (which it advances)."""
    seed = int(rng.randint(np.iinfo(np.int64).max, dtype=np.int64))
    return torch.Generator().manual_seed(seed)

r"""A scikit-learn estimator: a diagonal Gaussian mixture trained by mini-batch SGD.

:class:`SGDGaussianMixture` wraps one :class:`~dcgmm.layers.GMM` layer (input shape
``(1, 1, D)``, so every sample is one position) and trains it as spec §3 does: plain SGD on
mini-batches with the SingleExp schedule of :mod:`dcgmm.annealing`. It accepts and returns numpy
arrays and follows scikit-learn's estimator conventions, so it drops in where
``GaussianMixture(covariance_type="diag")`` is used and the data do not fit one EM pass.

Legend of the shape strings: N samples, D features, K components.
"""

import inspect
import math
import numbers
import warnings
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Float, Int
from torch import Tensor

from dcgmm._numerics import PRECISION_LOWER_BOUND, SQRT_PRECISION_LOWER_BOUND
from dcgmm.annealing import AnnealingConfig, SingleExpSchedule
from dcgmm.layers.draws import draw_categorical
from dcgmm.layers.gmm import GMM, OBJECTIVES, Objective
from dcgmm.layers.gmm_em import em_step_size, stepwise_em_step_
from dcgmm.layers.torus import torus_grid_side
from dcgmm.training import NumericalError

try:
    from sklearn.base import BaseEstimator, DensityMixin  # type: ignore[import-untyped]
    from sklearn.cluster import kmeans_plusplus  # type: ignore[import-untyped]
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.utils import check_random_state  # type: ignore[import-untyped]
    from sklearn.utils.validation import (  # type: ignore[import-untyped]
        check_is_fitted,
        validate_data,
    )
except ImportError as err:  # scikit-learn is not a runtime dependency of dcgmm
    # validate_data is new in scikit-learn 1.6, so an older version fails here as well.
    raise ImportError(
        "dcgmm.sklearn_api needs scikit-learn >= 1.6; install it with "
        "`pip install 'scikit-learn>=1.6'`"
    ) from err

__all__ = ["SGDGaussianMixture"]

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


class SGDGaussianMixture(DensityMixin, BaseEstimator):  # type: ignore[misc]
    r"""Diagonal Gaussian mixture trained on mini-batches: stepwise EM, or the papers' SGD.

    A scikit-learn estimator around one :class:`~dcgmm.layers.GMM` layer, for data that do
    not fit one EM pass (``partial_fit`` streams chunks). Two solvers:

    - ``"em"`` (default): stepwise (online) EM (:mod:`dcgmm.layers.gmm_em`, the solver
      ``TrainConfig(solver="em")`` gives DCGMM layers). Each mini-batch's expected sufficient
      statistics enter a running average with step :math:`(t + 2)^{-\alpha}`; the M-step
      follows every batch. On 4,000 MNIST digits
      (K = 49, pixels in [0, 1]) it reaches a higher test log-likelihood than scikit-learn's
      batch EM in a fifth of its time (``benchmarks/sklearn_em.py``).
    - ``"sgd"``: the papers' SGD (spec §3, the training of every DCGMM layer). Each step
      ascends the mean objective of one mini-batch; the learning rate and (for the annealed
      objective) the smoothing radius shrink with the SingleExp schedule. It needs many more
      passes to come close to EM (``docs/results/flat_gmm.md``).

    Parameters
    ----------
    n_components : int, default=1
        K, the number of mixture components. SGD's annealed objective lays them on a
        sqrt(K) x sqrt(K) torus, so it needs a perfect square (``fit`` raises a ValueError
        that names the nearest ones); the other objectives and EM take any K.
    solver : {"em", "sgd"}, default="em"
        Stepwise EM, or SGD. Parameters of the other solver are refused, not ignored:
        ``objective``, ``learning_rate``, ``learning_rate_floor``, the ``lr_factor_*`` and
        ``annealing_window`` are SGD's; ``step_exponent`` and ``tol`` are EM's.
    objective : {"annealed", "max_component", "loglik"}, default="annealed"
        What SGD maximises per sample: the annealed max-component log-likelihood of SGD-GMM
        (spec §3), its un-annealed form :math:`\max_k \log \pi_k N_k(x)`, or the exact
        log-likelihood :math:`\log \sum_k \pi_k N_k(x)`. Scores are always the exact one.
    batch_size : int, default=100
        Samples per SGD step (all samples if there are fewer).
    max_epochs : int, default=50
        Passes over the data in :meth:`fit`: all of them for SGD (the recipes train 25 to
        80), at most that many for EM, which stops when a pass gains less than ``tol``.
    learning_rate : float, default=0.011
        Initial SGD step size :math:`\epsilon_0` (the recipe). Small data sets, which give
        few steps, fit better with a larger one (0.03 to 0.05).
    learning_rate_floor : float, optional
        Step size the schedule stops at; default ``learning_rate / 1.1`` (0.01, the recipe).
    lr_factor_means, lr_factor_precisions, lr_factor_weights : float, default=1.0, 0.5, 0.5
        Per-parameter multipliers :math:`\lambda_\mu, \lambda_s, \lambda_\pi` of the step
        size; the defaults are the recipe of preset A, the flat GMM.
    annealing_window : int, default=100
        SGD steps per window of the schedule; each window may shrink the step size and the
        radius by 0.9. Annealing to the floor takes 35 to 55 such windows (K = 1 to 100),
        so small data sets want a smaller window.
    step_exponent : float, default=0.6
        EM's :math:`\alpha` in (0.5, 1]: larger forgets old batches faster at first and
        settles sooner.
    tol : float, default=1e-3
        EM stops when a pass raises the mean log-likelihood of its batches by less than
        ``tol * (1 + |that log-likelihood|)`` (relative, so that the scale of the data does
        not matter); 10 passes on MNIST digits.
    precision_upper_bound : float, default=20.0
        Largest diagonal precision (the spec's bound), applied to the standardised data when
        ``standardize``: every component's standard deviation stays at least
        ``1 / sqrt(bound)`` (0.22) times the feature's. A mean's SGD step scales with its
        precision, so larger bounds need ``learning_rate * lr_factor_means * bound < 2``,
        and precisions that start at a large bound take long to relax.
    standardize : bool, default=False
        Train on features shifted and scaled to zero mean and unit variance (statistics of
        the data given to :meth:`fit`, or to the first :meth:`partial_fit`). All fitted
        attributes and scores are in the units of the input. Off by default: on images the
        near-constant background pixels get a tiny scale, so the precision bound, relative
        to it, no longer holds their components back (test log-likelihood -1245 against 93
        without, SGD on 4,000 MNIST digits); use it for features of very different units.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial means, the batch order and :meth:`sample`.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the torch computation.

    Attributes
    ----------
    weights_ : ndarray of shape (K,)
        Mixing weights :math:`\pi_k`.
    means_ : ndarray of shape (K, D)
        Component means.
    covariances_ : ndarray of shape (K, D)
        Diagonal variances, as ``GaussianMixture(covariance_type="diag")`` stores them.
    precisions_ : ndarray of shape (K, D)
        ``1 / covariances_``.
    precisions_cholesky_ : ndarray of shape (K, D)
        ``sqrt(precisions_)`` (lets the parameters be copied onto a ``GaussianMixture``).
    feature_mean_, feature_scale_ : ndarray of shape (D,)
        The standardisation ``(x - feature_mean_) / feature_scale_`` used in training
        (zeros and ones without ``standardize``).
    converged_ : bool
        EM: whether a pass gained less than ``tol`` before ``max_epochs``. SGD: whether
        annealing has finished (a whole window ran with step size and radius at their floors
        and the objective's running mean did not improve), reported, not a stopping rule:
        SGD always runs ``max_epochs`` passes (as the recipes do). :meth:`fit` warns
        (``ConvergenceWarning``) when it is False.
    lower_bound_ : float
        Mean objective per sample (nats, input units) over the batches of the last pass. Each
        objective is at most the log-likelihood, so this bounds the training log-likelihood
        from below, at the parameters each batch saw.
    n_iter_ : int
        Completed passes over data (epochs of ``fit`` plus ``partial_fit`` calls).
    n_steps_ : int
        SGD steps taken.
    n_features_in_ : int
        D.
    feature_names_in_ : ndarray of shape (D,)
        Names of the features, when ``X`` had string column names.

    Notes
    -----
    The model is :math:`p(x) = \sum_k \pi_k \prod_d N(x_d \mid \mu_{kd}, \sigma_{kd}^2)`.
    Training works on :math:`z = (x - m) / c` (with ``standardize``), so densities pick up the
    Jacobian: :math:`\log p_x(x) = \log p_z(z) - \sum_d \log c_d`.

    Why SGD falls short of EM on images (4,000 MNIST digits, K = 49, measured by
    ``benchmarks/sklearn_em.py``): standardising lets the precision bound follow each pixel's
    spread, so the near-constant background pixels get precisions far above 20 in pixel units
    and test digits fall outside them (-305.9 nats); without it, 50 SGD epochs reach 94.2 and
    250 epochs 159.1: small SGD steps and an annealing that must run its course need many
    passes; the exact-log-likelihood objective (no annealing) stops at 135.0 after 50. Stepwise
    EM moves to each batch's responsibility-weighted statistics (a step of 0.66 at first) and
    gets 207.9 in 10 passes (scikit-learn's batch EM: 193.5, its floor added, not clipped).

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

    References: A. Gepperth, B. Pfuelb, *Gradient-based training of Gaussian mixture models
    for high-dimensional streaming data*, Neural Processing Letters, 2021.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (500, 2)), rng.normal(3, 1, (500, 2))])
    >>> est = SGDGaussianMixture(n_components=4, random_state=0).fit(X)
    >>> est.means_.shape, est.score_samples(X[:3]).shape
    ((4, 2), (3,))
    """

    lower_bound_: float  # set by fit / partial_fit (annotations only: check_is_fitted)
    converged_: bool

    def __init__(
        self,
        n_components: int = 1,
        *,
        solver: Literal["em", "sgd"] = "em",
        objective: Literal["annealed", "max_component", "loglik"] = "annealed",
        batch_size: int = 100,
        max_epochs: int = 50,
        learning_rate: float = 0.011,
        learning_rate_floor: float | None = None,
        lr_factor_means: float = 1.0,
        lr_factor_precisions: float = 0.5,
        lr_factor_weights: float = 0.5,
        annealing_window: int = 100,
        step_exponent: float = 0.6,
        tol: float = 1e-3,
        precision_upper_bound: float = 20.0,
        standardize: bool = False,
        random_state: int | np.random.RandomState | None = None,
        dtype: Literal["float32", "float64"] = "float32",
    ) -> None:
        self.n_components = n_components
        self.solver = solver
        self.objective = objective
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.learning_rate_floor = learning_rate_floor
        self.lr_factor_means = lr_factor_means
        self.lr_factor_precisions = lr_factor_precisions
        self.lr_factor_weights = lr_factor_weights
        self.annealing_window = annealing_window
        self.step_exponent = step_exponent
        self.tol = tol
        self.precision_upper_bound = precision_upper_bound
        self.standardize = standardize
        self.random_state = random_state
        self.dtype = dtype

    # ---------------------------------------------------------------- training

    def fit(self, X: npt.ArrayLike, y: object = None) -> Self:
        """Fit the mixture from scratch with ``max_epochs`` passes of mini-batch SGD.

        Parameters
        ----------
        X : array-like of shape (N, D)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : SGDGaussianMixture
            The fitted estimator.

        Raises
        ------
        TypeError
            For a parameter of the wrong type.
        ValueError
            For an invalid parameter value, non-finite data, or fewer samples than components.
        dcgmm.training.NumericalError
            If the objective becomes non-finite (the step size is too large).
        """
        self._validate_params()
        x = self._validate_x(X, reset=True)
        z = self._initialise(x, check_random_state(self.random_state))
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
                stacklevel=2,
            )  # fmt: skip
        return self

    def partial_fit(self, X: npt.ArrayLike, y: object = None) -> Self:
        """Run one pass of SGD steps over the chunk ``X``, continuing from the current state.

        The first call initialises the model (k-means++ seeds from this chunk and, with
        ``standardize``, the standardisation from its statistics), so it should be a
        representative chunk of at least ``n_components`` samples. Later calls must have the
        same features. The step-size schedule runs on across calls.

        Parameters
        ----------
        X : array-like of shape (N, D)
            A chunk of training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : SGDGaussianMixture
            The updated estimator.
        """
        first_call = not hasattr(self, "_layer")
        self._validate_params()
        x = self._validate_x(X, reset=first_call)
        if first_call:
            z = self._initialise(x, check_random_state(self.random_state))
        else:
            z = self._to_tensor(x)
        self._run_pass(z)
        self._export_parameters()
        return self

    def fit_predict(self, X: npt.ArrayLike, y: object = None) -> Int[np.ndarray, " N"]:
        """Fit the mixture on ``X`` and return the most likely component of each sample.

        Parameters
        ----------
        X : array-like of shape (N, D)
            Training data.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        labels : ndarray of shape (N,)
            Component indices.
        """
        return self.fit(X).predict(X)

    # ------------------------------------------------------------- validation

    @classmethod
    def _defaults(cls) -> dict[str, object]:
        return {
            name: p.default
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def _validate_params(self) -> None:
        for name in ("n_components", "batch_size", "max_epochs", "annealing_window"):
            _check_number(name, getattr(self, name), integer=True)
        for name in ("learning_rate", "precision_upper_bound"):
            _check_number(name, getattr(self, name), integer=False)
        if self.learning_rate_floor is not None:
            _check_number("learning_rate_floor", self.learning_rate_floor, integer=False)
            if self.learning_rate_floor > self.learning_rate:
                raise ValueError(
                    f"learning_rate_floor must not exceed learning_rate; got "
                    f"learning_rate_floor={self.learning_rate_floor}, "
                    f"learning_rate={self.learning_rate}. Lower the floor or leave it None"
                )
        for name in ("lr_factor_means", "lr_factor_precisions", "lr_factor_weights"):
            _check_number(name, getattr(self, name), integer=False, allow_zero=True)
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
        _check_number("tol", self.tol, integer=False, allow_zero=True)
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

    # --------------------------------------------------------------- training

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

    # -------------------------------------------------------------- inference

    def score_samples(self, X: npt.ArrayLike) -> Float[np.ndarray, " N"]:
        r"""Return the log-likelihood :math:`\log \sum_k \pi_k N_k(x)` of every sample.

        Parameters
        ----------
        X : array-like of shape (N, D)
            Samples.

        Returns
        -------
        log_prob : ndarray of shape (N,)
            Natural-log densities in the units of ``X`` (float64).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit` or :meth:`partial_fit`.
        """
        z = self._validated_tensor(X)
        with torch.no_grad():
            log_prob = self._layer.log_prob(z).reshape(-1).double().numpy()
        # Change of variables z = (x - m) / c: the density picks up |dz/dx| = prod_d 1 / c_d.
        return log_prob - np.log(self.feature_scale_).sum()

    def score(self, X: npt.ArrayLike, y: object = None) -> float:
        """Return the mean log-likelihood per sample (nats).

        Parameters
        ----------
        X : array-like of shape (N, D)
            Samples.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        score : float
            ``score_samples(X).mean()``.
        """
        return float(self.score_samples(X).mean())

    def predict_proba(self, X: npt.ArrayLike) -> Float[np.ndarray, "N K"]:
        """Return the responsibilities (posterior component probabilities) of every sample.

        Parameters
        ----------
        X : array-like of shape (N, D)
            Samples.

        Returns
        -------
        resp : ndarray of shape (N, K)
            Rows sum to 1 (float64).
        """
        z = self._validated_tensor(X)
        with torch.no_grad():
            resp = self._layer(z)  # (N, 1, 1, K); the Jacobian cancels in the posterior
        return resp.reshape(z.shape[0], -1).double().numpy()

    def predict(self, X: npt.ArrayLike) -> Int[np.ndarray, " N"]:
        """Return the most likely component of every sample.

        Parameters
        ----------
        X : array-like of shape (N, D)
            Samples.

        Returns
        -------
        labels : ndarray of shape (N,)
            Component indices in ``[0, K)``.
        """
        z = self._validated_tensor(X)
        with torch.no_grad():
            log_joint = self._layer.log_joint(z)  # (N, 1, 1, K)
        return log_joint.reshape(z.shape[0], -1).argmax(dim=-1).numpy()

    def sample(self, n_samples: int = 1) -> tuple[Float[np.ndarray, "N D"], Int[np.ndarray, " N"]]:
        """Draw samples from the fitted mixture.

        Each sample picks a component with probability ``weights_`` and adds Gaussian noise of
        the component's own standard deviation, so the samples have the mixture's moments.
        As in ``GaussianMixture``, an int ``random_state`` gives the same draw on every call.

        Parameters
        ----------
        n_samples : int, default=1
            How many samples.

        Returns
        -------
        X : ndarray of shape (n_samples, D)
            The samples (float64), in random order.
        y : ndarray of shape (n_samples,)
            The component each sample was drawn from.
        """
        check_is_fitted(self)
        _check_number("n_samples", n_samples, integer=True)
        n = int(n_samples)
        generator = _torch_generator(check_random_state(self.random_state))
        layer, k = self._layer, int(self.n_components)
        with torch.no_grad():
            weights = layer.weights.detach().expand(n, k)
            labels = draw_categorical(weights, generator=generator)  # (n,)
            # A one-hot control makes the layer emit exactly the drawn component.
            control = torch.nn.functional.one_hot(labels, k).to(weights.dtype)
            z = layer.sample(
                control.reshape(n, 1, 1, k),
                generator=generator,
                noise_divisor=1.0,
                noise_at_bound=True,
            )
        x = self.feature_mean_ + self.feature_scale_ * z.reshape(n, -1).double().numpy()
        return x, labels.numpy()


def _check_number(name: str, value: object, *, integer: bool, allow_zero: bool = False) -> None:
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


def _torch_generator(rng: np.random.RandomState) -> torch.Generator:
    """Return a torch generator seeded from a numpy random state (which it advances)."""
    seed = int(rng.randint(np.iinfo(np.int64).max, dtype=np.int64))
    return torch.Generator().manual_seed(seed)

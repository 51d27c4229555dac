r"""A scikit-learn estimator: a diagonal Gaussian mixture trained on mini-batches.

:class:`SGDGaussianMixture` wraps one :class:`~dcgmm.layers.GMM` layer (input shape
``(1, 1, D)``, so every sample is one position) and trains it by stepwise EM (the default) or
as spec §3 does, plain SGD with the SingleExp schedule of :mod:`dcgmm.training.annealing`.
It accepts and returns numpy arrays and follows scikit-learn's estimator conventions, so it
drops in where ``GaussianMixture(covariance_type="diag")`` is used and the data do not fit
one EM pass. The fitting itself is :class:`dcgmm.interfaces.sklearn_fitting.MixtureFitting`.

Legend of the shape strings: N samples, D features, K components.
"""

from typing import Literal, Self

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Float, Int

from dcgmm.interfaces._sklearn import (
    BaseEstimator,
    DensityMixin,
    check_is_fitted,
    check_random_state,
)
from dcgmm.interfaces.sklearn_fitting import MixtureFitting, check_number, torch_generator

__all__ = ["SGDGaussianMixture"]


class SGDGaussianMixture(MixtureFitting, DensityMixin, BaseEstimator):  # type: ignore[misc]
    r"""Diagonal Gaussian mixture trained on mini-batches: stepwise EM, or the papers' SGD.

    A scikit-learn estimator around one :class:`~dcgmm.layers.GMM` layer, for data that do
    not fit one EM pass (``partial_fit`` streams chunks). Two solvers:

    - ``"em"`` (default): stepwise (online) EM (:mod:`dcgmm.layers.gmm_em`, the solver
      ``TrainConfig(solver="em")`` gives DCGMM layers). Each mini-batch's expected sufficient
      statistics enter a running average with step :math:`(t + 2)^{-\alpha}`; the M-step
      follows every batch. On 4,000 MNIST digits
      (K = 49, pixels in [0, 1]) it reaches a higher test log-likelihood than scikit-learn's
      batch EM in an eighth of its time (``benchmarks/sklearn_em.py``).
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

    Why SGD falls short of EM on images, and the initialisation and bounds a scikit-learn
    user should know about: :mod:`dcgmm.interfaces.sklearn_fitting`.

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
        """Fit the mixture from scratch: at most ``max_epochs`` passes (EM stops at ``tol``).

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
        dcgmm.training.watchdog.NumericalError
            If the objective becomes non-finite (the step size is too large).
        """
        self._validate_params()
        x = self._validate_x(X, reset=True)
        self._fit_passes(self._initialise(x, check_random_state(self.random_state)))
        return self

    def partial_fit(self, X: npt.ArrayLike, y: object = None) -> Self:
        """Run one pass of steps over the chunk ``X``, continuing from the current state.

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

    # --------------------------------------------------------------- training

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
        check_number("n_samples", n_samples, integer=True)
        generator = torch_generator(check_random_state(self.random_state))
        return self._draw(int(n_samples), generator)

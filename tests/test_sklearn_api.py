"""SGDGaussianMixture: recovery of a known mixture, oracles, streaming, sklearn conventions."""

import importlib.util
import itertools
import math
import sys

import beartype
import jaxtyping
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.utils.estimator_checks import parametrize_with_checks

from dcgmm.interfaces.sklearn_api import SGDGaussianMixture
from dcgmm.training.watchdog import NumericalError

# A known 2-D mixture, far from [0, 1] on purpose: the estimator is a generic GMM.
OFFSET = np.array([10.0, -20.0])
TRUE_MEANS = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0], [0.0, -5.0]]) + OFFSET
TRUE_STDS = np.array([[1.0, 0.5], [0.6, 1.2], [0.8, 0.8], [1.5, 0.7]])
TRUE_WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])

# Small data give few SGD steps (20 per epoch here): windows of 5 steps let annealing reach its
# floor (about 45 windows) early, and a step size of 0.05 instead of 0.011 fits in fewer steps.
# The papers' SGD, with a fast schedule, on standardised features (what these tests measured).
FAST = {"solver": "sgd", "annealing_window": 5, "learning_rate": 0.05, "standardize": True}
EPOCHS = 50  # 1000 steps


def draw_mixture(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(TRUE_WEIGHTS), size=n, p=TRUE_WEIGHTS)
    return TRUE_MEANS[labels] + TRUE_STDS[labels] * rng.standard_normal((n, 2))


def diag_mixture_log_prob(x, weights, means, variances):
    """Float64 oracle: log sum_k pi_k prod_d N(x_d | mu_kd, var_kd), by broadcasting."""
    x, weights, means, variances = (
        np.asarray(a, dtype=np.float64) for a in (x, weights, means, variances)
    )
    sq = (x[:, None, :] - means[None]) ** 2 / variances[None]  # (N, K, D)
    log_dens = -0.5 * (sq + np.log(2 * np.pi * variances)[None]).sum(-1)  # (N, K)
    log_joint = np.log(weights)[None] + log_dens
    top = log_joint.max(1, keepdims=True)
    return (top + np.log(np.exp(log_joint - top).sum(1, keepdims=True)))[:, 0]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Batches of 100 x 2 are far too small to split: with 2 threads on a busy 2-core machine
    # a step took 48 ms instead of 0.6 ms (OpenMP waits for the other core).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return draw_mixture(2000, seed=0), draw_mixture(2000, seed=1)


@pytest.fixture(scope="module")
def fitted(data):
    return SGDGaussianMixture(4, max_epochs=EPOCHS, random_state=0, **FAST).fit(data[0])


# ------------------------------------------------------------------ recovery


def test_recovers_the_true_means_up_to_permutation(fitted):
    errors = [
        np.abs(fitted.means_[list(perm)] - TRUE_MEANS).max()
        for perm in itertools.permutations(range(4))
    ]
    assert min(errors) < 0.2  # measured 0.09; the true standard deviations are 0.5 to 1.5


def test_mean_score_is_close_to_sklearn_em(fitted, data):
    x_train, x_test = data
    em = GaussianMixture(4, covariance_type="diag", random_state=0).fit(x_train)
    gap = em.score(x_test) - fitted.score(x_test)
    # Measured on the held-out draw: EM -3.654, SGD -3.729 nats per sample (gap 0.075). About
    # half is the precision bound (EM's variances floored at feature_var / 20 score -3.694);
    # the rest is SGD's precisions, still relaxing after 1000 steps.
    assert gap < 0.12
    assert gap > -0.05  # SGD should not beat EM's maximum likelihood on held-out data


def test_weights_and_variances_are_close_to_the_truth(fitted):
    order = [
        int(np.argmin(np.abs(fitted.means_ - m).sum(1))) for m in TRUE_MEANS
    ]  # the fitted component nearest each true one
    np.testing.assert_allclose(fitted.weights_[order], TRUE_WEIGHTS, atol=0.03)
    # The std floor is 0.22 feature std (about 0.67 here), so small true stds come out larger.
    stds = np.sqrt(fitted.covariances_[order])
    floor = 0.99 * fitted.feature_scale_ / math.sqrt(fitted.precision_upper_bound)
    assert np.all(stds >= floor)
    # SGD moves precisions slowly (their step shrinks with the variance): after 1000 steps
    # the stds are within 40% of the truth (measured: at most 28%; EM's: 11%).
    np.testing.assert_allclose(stds, np.maximum(TRUE_STDS, floor), rtol=0.4)


def test_converged_after_annealing_and_not_before(fitted, data):
    assert fitted.converged_
    assert fitted._schedule.sigma == pytest.approx(0.01)
    early = SGDGaussianMixture(4, max_epochs=1, random_state=0, **FAST).fit(data[0])
    assert not early.converged_
    assert (fitted.n_iter_, fitted.n_steps_) == (EPOCHS, 20 * EPOCHS)


def test_lower_bound_is_a_training_log_likelihood_in_input_units(fitted, data):
    # Without the Jacobian term the two would differ by sum(log feature_scale_), about 2.3.
    assert fitted.lower_bound_ == pytest.approx(fitted.score(data[0]), abs=0.1)


# ------------------------------------------------------------------- oracles


def test_score_samples_matches_float64_hand_computation(fitted, data):
    x = data[1][:500]
    expected = diag_mixture_log_prob(x, fitted.weights_, fitted.means_, fitted.covariances_)
    got = fitted.score_samples(x)
    assert got.dtype == np.float64
    # float32 training and scoring: stated tolerance 1e-4 relative to |log p| (about 1 to 10).
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert fitted.score(x) == pytest.approx(expected.mean(), rel=1e-5)


def test_float64_model_matches_hand_computation_tightly(data):
    est = SGDGaussianMixture(4, dtype="float64", max_epochs=2, random_state=0, **FAST)
    est.fit(data[0])
    x = data[1][:500]
    expected = diag_mixture_log_prob(x, est.weights_, est.means_, est.covariances_)
    np.testing.assert_allclose(est.score_samples(x), expected, rtol=1e-12, atol=1e-10)
    assert est._layer.means.dtype == torch.float64


def test_parameters_copied_onto_sklearn_give_the_same_scores(fitted, data):
    em = GaussianMixture(4, covariance_type="diag")
    em.weights_, em.means_ = fitted.weights_, fitted.means_
    em.covariances_, em.precisions_cholesky_ = fitted.covariances_, fitted.precisions_cholesky_
    em.n_features_in_ = 2
    x = data[1][:500]
    np.testing.assert_allclose(fitted.score_samples(x), em.score_samples(x), rtol=1e-4)
    np.testing.assert_allclose(fitted.predict_proba(x), em.predict_proba(x), atol=1e-4)
    np.testing.assert_allclose(fitted.precisions_, 1.0 / fitted.covariances_)


def test_predict_is_the_argmax_of_predict_proba(fitted, data):
    x = data[1][:500]
    resp = fitted.predict_proba(x)
    np.testing.assert_allclose(resp.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.predict(x), resp.argmax(1))
    labels = SGDGaussianMixture(4, max_epochs=2, random_state=0, **FAST).fit_predict(x)
    assert labels.shape == (500,)
    assert set(labels) <= {0, 1, 2, 3}


# ---------------------------------------------------------------- sampling


def test_sample_has_the_mixture_moments(fitted):
    x, labels = fitted.sample(20_000)
    assert x.shape == (20_000, 2)
    assert labels.shape == (20_000,)
    w, mu, var = fitted.weights_, fitted.means_, fitted.covariances_
    mean = w @ mu
    variance = w @ (var + mu**2) - mean**2
    # Standard errors with 20000 draws: mean about 0.03, variance about 0.3%; the generator
    # is fixed by random_state, so the test never flakes.
    np.testing.assert_allclose(x.mean(0), mean, atol=0.15)  # measured: 0.07
    np.testing.assert_allclose(x.var(0), variance, rtol=0.05)
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / 20_000, w, atol=0.01)
    within = x[labels == 0]
    np.testing.assert_allclose(within.mean(0), mu[0], atol=0.1)
    np.testing.assert_allclose(within.var(0), var[0], rtol=0.1)


def test_sample_is_reproducible_with_an_int_random_state(fitted):
    first, second = fitted.sample(50), fitted.sample(50)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


# --------------------------------------------------------------- streaming


def test_partial_fit_over_chunks_improves_the_score(data):
    x_train, x_test = data
    est = SGDGaussianMixture(4, random_state=0, **FAST)
    chunks = np.array_split(x_train, 4)  # 500 samples: 5 steps per call
    est.partial_fit(chunks[0])
    layer, first = est._layer, est.score(x_test)
    for _ in range(25):
        for chunk in chunks:
            est.partial_fit(chunk)
    assert est._layer is layer  # the state carries over between calls
    assert (est.n_iter_, est.n_steps_) == (101, 505)
    # Measured: -7.36 after the first chunk, -3.78 after 505 steps.
    assert est.score(x_test) > first + 1.0
    assert est.score(x_test) > -4.0


def test_two_partial_fits_equal_a_fit_of_two_epochs(data):
    x = data[0][:1000]
    by_fit = SGDGaussianMixture(4, max_epochs=2, random_state=3, **FAST).fit(x)
    by_parts = SGDGaussianMixture(4, random_state=3, **FAST).partial_fit(x).partial_fit(x)
    np.testing.assert_array_equal(by_fit.means_, by_parts.means_)
    np.testing.assert_array_equal(by_fit.covariances_, by_parts.covariances_)


def test_fit_restarts_after_partial_fit(data):
    x = data[0][:1000]
    est = SGDGaussianMixture(4, max_epochs=1, random_state=0, **FAST).partial_fit(x)
    est.partial_fit(x).fit(x)
    fresh = SGDGaussianMixture(4, max_epochs=1, random_state=0, **FAST).fit(x)
    np.testing.assert_array_equal(est.means_, fresh.means_)
    assert est.n_iter_ == 1


# ------------------------------------------------------------ reproducibility


def test_random_state_makes_fits_reproducible(data):
    x = data[0][:1000]
    a = SGDGaussianMixture(4, max_epochs=2, random_state=7, **FAST).fit(x)
    b = SGDGaussianMixture(4, max_epochs=2, random_state=7, **FAST).fit(x)
    c = SGDGaussianMixture(4, max_epochs=2, random_state=8, **FAST).fit(x)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.score_samples(x), b.score_samples(x))
    assert not np.array_equal(a.means_, c.means_)
    refit = a.fit(x)  # fitting again starts from scratch
    np.testing.assert_array_equal(refit.means_, b.means_)


def test_fit_leaves_the_global_rngs_alone(data):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
    SGDGaussianMixture(4, max_epochs=1, random_state=0, **FAST).fit(data[0][:500])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # noqa: NPY002


# ----------------------------------------------------------- other branches


@pytest.mark.parametrize("objective", ["max_component", "loglik"])
def test_unannealed_objectives_fit_any_k(objective, data):
    est = SGDGaussianMixture(5, objective=objective, max_epochs=5, random_state=0, **FAST)
    est.fit(data[0])
    assert est.means_.shape == (5, 2)
    assert np.isfinite(est.score(data[1]))
    assert est._layer.sigma_som_value == pytest.approx(0.01)  # no smoothing at all


def test_without_standardisation_the_bound_is_in_input_units():
    # Pixel-like data in [0, 1]: the spec's setting, where the bound 20 was chosen.
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal([0.2, 0.8], 0.05, size=(400, 2)), 0, 1)
    est = SGDGaussianMixture(1, max_epochs=20, random_state=0, **{**FAST, "standardize": False})
    est.fit(x)
    np.testing.assert_array_equal(est.feature_mean_, [0.0, 0.0])
    np.testing.assert_array_equal(est.feature_scale_, [1.0, 1.0])
    np.testing.assert_allclose(est.covariances_, 1 / 20, rtol=1e-6)  # true var 0.0025 < 1/20
    np.testing.assert_allclose(est.means_[0], x.mean(0), atol=0.02)


def test_constant_feature_is_shifted_not_scaled():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=200), np.full(200, 3.0)])
    est = SGDGaussianMixture(1, standardize=True, max_epochs=2, random_state=0).fit(x)
    np.testing.assert_array_equal(est.feature_scale_[1], 1.0)
    assert np.isfinite(est.score(x))


def test_batch_larger_than_the_data_takes_one_step_per_pass():
    x = np.random.default_rng(0).normal(size=(30, 2))
    est = SGDGaussianMixture(1, batch_size=100, max_epochs=3, random_state=0).fit(x)
    assert est.n_steps_ == 3


def test_a_diverging_fit_raises_a_numerical_error(data):
    est = SGDGaussianMixture(4, solver="sgd", learning_rate=1e8, annealing_window=2, random_state=0)
    with pytest.raises(NumericalError, match="non-finite objective"):
        est.fit(data[0][:500])


def test_annotations_hold_at_run_time(fitted, data):
    # tests/conftest.py hooks only modules that dcgmm/__init__ imports; check ours explicitly.
    def checked(name):
        return jaxtyping.jaxtyped(typechecker=beartype.beartype)(getattr(SGDGaussianMixture, name))

    # `Self` is only defined for beartype inside a decorated class: check fit and partial_fit
    # on a decorated subclass.
    methods = {name: getattr(SGDGaussianMixture, name) for name in ("fit", "partial_fit")}
    checked_class = beartype.beartype(type("Checked", (SGDGaussianMixture,), methods))

    x = data[1][:7]
    assert checked("score_samples")(fitted, x).shape == (7,)
    assert checked("predict_proba")(fitted, x).shape == (7, 4)
    assert checked("predict")(fitted, x).shape == (7,)
    assert isinstance(checked("score")(fitted, x), float)
    assert checked("sample")(fitted, 3)[0].shape == (3, 2)
    est = checked_class(1, max_epochs=1).fit(x.tolist())  # a nested list is array-like
    assert est.partial_fit(x) is est


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("method", ["score_samples", "score", "predict", "predict_proba"])
def test_methods_before_fit_raise_not_fitted(method, data):
    with pytest.raises(NotFittedError):
        getattr(SGDGaussianMixture(), method)(data[0])


def test_sample_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        SGDGaussianMixture().sample(3)


def test_wrong_number_of_features_raises(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but SGDGaussianMixture is expecting 2"):
        fitted.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X has 3 features"):
        SGDGaussianMixture(1, random_state=0).partial_fit(np.zeros((5, 2))).partial_fit(
            np.zeros((5, 3))
        )


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        (
            {"solver": "sgd", "n_components": 5},
            ValueError,
            r"perfect square.*K=4 or K=9.*max_component",
        ),
        ({"solver": "newton"}, ValueError, "solver must be 'em' or 'sgd'"),
        ({"learning_rate": 0.1}, ValueError, r"learning_rate applies to solver='sgd', not 'em'"),
        ({"solver": "sgd", "tol": 0.1}, ValueError, r"tol applies to solver='em', not 'sgd'"),
        ({"step_exponent": 0.4}, ValueError, r"step_exponent must be in \(0.5, 1\]"),
        ({"n_components": 0}, ValueError, "n_components must be a positive int; got 0"),
        ({"n_components": 2.0}, TypeError, "n_components must be a positive int"),
        ({"batch_size": True}, TypeError, "batch_size must be a positive int"),
        ({"max_epochs": -1}, ValueError, "max_epochs must be a positive int"),
        ({"annealing_window": 0}, ValueError, "annealing_window must be a positive int"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a positive"),
        (
            {"solver": "sgd", "learning_rate_floor": 0.1},
            ValueError,
            "must not exceed learning_rate",
        ),
        ({"learning_rate_floor": "0.01"}, TypeError, "learning_rate_floor must be"),
        ({"lr_factor_weights": -0.5}, ValueError, "lr_factor_weights must be a non-negative"),
        ({"precision_upper_bound": 1e-5}, ValueError, "must exceed the lower bound"),
        ({"solver": "sgd", "objective": "em"}, ValueError, "objective must be one of"),
        ({"dtype": "float16"}, ValueError, "dtype must be one of"),
    ],
)
def test_invalid_parameters_raise_in_fit(params, error, match):
    est = SGDGaussianMixture(**params)  # sklearn convention: __init__ stores, fit validates
    with pytest.raises(error, match=match):
        est.fit(np.zeros((20, 2)))


def test_numpy_integers_are_valid_parameters(data):
    est = SGDGaussianMixture(np.int64(1), batch_size=np.int32(50), max_epochs=np.int64(1))
    assert est.fit(data[0][:100]).n_steps_ == 2


def test_fewer_samples_than_components_raises():
    with pytest.raises(ValueError, match="n_samples >= n_components; got n_samples=3"):
        SGDGaussianMixture(4).fit(np.zeros((3, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_raises(bad):
    x = np.zeros((10, 2))
    x[3, 1] = bad
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        SGDGaussianMixture(1).fit(x)


@pytest.mark.parametrize("n_samples", [0, -2, 1.5])
def test_sample_rejects_a_bad_count(fitted, n_samples):
    with pytest.raises((ValueError, TypeError), match="n_samples must be a positive int"):
        fitted.sample(n_samples)


def test_sklearn_not_installed_gives_an_install_hint(monkeypatch):
    # where dcgmm.interfaces.sklearn_api gets scikit-learn from
    import dcgmm.interfaces._sklearn as module

    # Execute a fresh copy of the module (not the one the other tests use) with sklearn hidden.
    spec = importlib.util.spec_from_file_location("sklearn_copy", module.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sklearn.base", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"needs scikit-learn >= 1.6.*pip install"):
        spec.loader.exec_module(copy)


# ------------------------------------------------------ sklearn's own checks

# A density estimator with the default K = 1, so every check's data set can be fitted; few
# epochs keep the whole suite near 0.3 s. All 41 checks that scikit-learn 1.9 yields for a
# density estimator pass. The one skip is sklearn's own: check_array_api_input needs
# SCIPY_ARRAY_API=1 before scipy is first imported (it passes when run that way). The checks
# for classifiers, regressors, clusterers and transformers are not yielded for a density
# estimator (like GaussianMixture, this is not a ClusterMixin: fit_predict exists, but
# labels_ does not), so none needs an expected-failure entry.


@parametrize_with_checks([SGDGaussianMixture(max_epochs=5)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------ stepwise EM


def test_em_scores_as_sklearn_em_on_held_out_data(data):
    x_train, x_test = data
    em = GaussianMixture(4, covariance_type="diag", random_state=0).fit(x_train)
    ours = SGDGaussianMixture(4, random_state=0).fit(x_train)
    assert ours.converged_
    assert abs(em.score(x_test) - ours.score(x_test)) < 0.02  # measured 0.005 nats
    errors = [np.abs(ours.means_[list(p)] - TRUE_MEANS).max()
              for p in itertools.permutations(range(4))]  # fmt: skip
    assert min(errors) < 0.15


def test_em_warns_when_max_epochs_end_before_it_converged(data):
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 epochs"):
        est = SGDGaussianMixture(4, max_epochs=1, random_state=0).fit(data[0])
    assert not est.converged_


def test_em_streamed_in_chunks_scores_as_a_fit_over_the_same_samples(data):
    x_train, x_test = data
    fitted = SGDGaussianMixture(4, max_epochs=3, tol=0.0, random_state=0).fit(x_train)
    streamed = SGDGaussianMixture(4, random_state=0)
    for _ in range(3):
        for chunk in np.array_split(x_train, 10):
            streamed.partial_fit(chunk)
    assert streamed.n_steps_ == fitted.n_steps_
    assert abs(streamed.score(x_test) - fitted.score(x_test)) < 0.02

"""
The scikit-learn estimator beside GaussianMixture
=================================================

:class:`dcgmm.interfaces.sklearn_api.SGDGaussianMixture` is one diagonal GMM layer with
scikit-learn's conventions (``fit``, ``partial_fit``, ``score_samples``, ``weights_``,
``means_``, ...), trained on mini-batches by stepwise EM. Here it and
``sklearn.mixture.GaussianMixture(covariance_type="diag")`` (batch EM) fit the same
5,000 flattened training digits with 25 components and are scored on the 2,000 test
digits. Both are flat GMMs of whole images: no convolution, unlike a DCGMM. The full
comparison (49 components, all 10,000 digits, timings) is on the :doc:`estimator
benchmark page <../sklearn_em>`.
"""

import time

import matplotlib.pyplot as plt
from sklearn.mixture import GaussianMixture

from dcgmm import load_dataset
from dcgmm.interfaces.sklearn_api import SGDGaussianMixture

X = (
    load_dataset("mnist", limit=5000).images.reshape(5000, -1).numpy()
)  # (n_samples, 784)
X_test = load_dataset("mnist", split="test").images.reshape(2000, -1).numpy()

estimators = {
    "SGDGaussianMixture (stepwise EM)": SGDGaussianMixture(
        n_components=25, batch_size=100, max_epochs=50, random_state=0
    ),
    "GaussianMixture (batch EM)": GaussianMixture(
        n_components=25,
        covariance_type="diag",
        reg_covar=0.05,
        max_iter=100,
        random_state=0,
    ),
}
scores = {}
for name, estimator in estimators.items():
    start = time.perf_counter()
    estimator.fit(X)
    seconds = time.perf_counter() - start
    scores[name] = estimator.score_samples(X_test)  # log p(x) per test digit, nats
    mean = scores[name].mean()
    print(f"{name}: {mean:.1f} nats per test digit, fit in {seconds:.1f} s,")
    print(f"    {estimator.n_iter_} passes, converged: {estimator.converged_}")

# %%
# The twelve heaviest components' means, as images.
fig, axes = plt.subplots(2, 12, figsize=(10, 2.2))
for row, (name, estimator) in enumerate(estimators.items()):
    order = estimator.weights_.argsort()[::-1][:12]
    for ax, k in zip(axes[row], order, strict=True):
        ax.imshow(estimator.means_[k].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    axes[row, 0].set_title(name, loc="left", fontsize=9)

# %%
# The test digits' log-likelihoods under both.
fig, ax = plt.subplots(figsize=(6, 3))
for name, values in scores.items():
    ax.hist(values, bins=60, alpha=0.6, label=f"{name}: mean {values.mean():.1f}")
ax.set(xlabel="log p(x) of a test digit (nats)", ylabel="test digits")
ax.legend(fontsize=8)
fig.tight_layout()

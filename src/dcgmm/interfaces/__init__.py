"""One face for every model: the ImageModel protocol, loading any run, the scikit-learn estimator.

- :mod:`~dcgmm.interfaces.image_model`: :class:`~dcgmm.interfaces.image_model.ImageModel`,
  :class:`~dcgmm.interfaces.image_model.DensityModel` and the DCGMM's adapter;
- :mod:`~dcgmm.interfaces.runs`: :func:`~dcgmm.interfaces.runs.load_run` for a DCGMM's or a
  baseline's run directory, and what every command does with it (evaluate, sample, in-paint);
- :mod:`~dcgmm.interfaces.run_outliers`: the outlier protocol for any run in one call;
- :mod:`~dcgmm.interfaces.sklearn_api`, :mod:`~dcgmm.interfaces.sklearn_fitting`: the
  scikit-learn estimator ``SGDGaussianMixture``;
- :mod:`~dcgmm.interfaces.demo`: the demo (``dcgmm demo``, ``make demo``) in one call.

It may import everything below it (training, generation, evaluation, the core, io); the
baselines only lazily, when it is handed one.
"""

__all__: list[str] = []

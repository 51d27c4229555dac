"""One face for every model: the ImageModel protocol, loading any run, the scikit-learn estimator.

- :mod:`~dcgmm.interfaces.image_model`: :class:`~dcgmm.interfaces.image_model.ImageModel`,
  :class:`~dcgmm.interfaces.image_model.DensityModel` and the DCGMM's adapter;
- :mod:`~dcgmm.interfaces.runs`: :func:`~dcgmm.interfaces.runs.load_run` for a DCGMM's or a
  baseline's run directory;
- :mod:`~dcgmm.interfaces.sklearn_api`, :mod:`~dcgmm.interfaces.sklearn_fitting`: the
  scikit-learn estimator ``SGDGaussianMixture``;
- :mod:`~dcgmm.interfaces.demo`: the demo (``dcgmm demo``, ``make demo``) in one call.

It may import everything below it (training, generation, evaluation, the core, io); the
baselines only lazily, when it is handed one.
"""

__all__: list[str] = []

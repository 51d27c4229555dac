"""Measuring a trained model: scores, outliers, clustering, the sample judge, pictures.

- :mod:`~dcgmm.evaluation.scores`: per-GMM-layer scores (:func:`~dcgmm.evaluation.scores.evaluate`);
- :mod:`~dcgmm.evaluation.outliers`: outlier scores, statistics and maps;
- :mod:`~dcgmm.evaluation.contrast`: layer-contrast outlier scores (upper vs lower layer);
- :mod:`~dcgmm.evaluation.outlier_detection`: the outlier protocol in one call;
- :mod:`~dcgmm.evaluation.clustering`: clustering indices of the top layer;
- :mod:`~dcgmm.evaluation.judge`: the CNN that judges samples (Table III);
- :mod:`~dcgmm.evaluation.plots`: centroid grids, training curves, ROC curves.

It imports the core (model, stages, layers) and :mod:`dcgmm.io` only.
"""

__all__: list[str] = []

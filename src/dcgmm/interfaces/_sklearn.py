"""scikit-learn, imported once with a clear message when it is missing (an optional extra)."""

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
        "dcgmm.interfaces.sklearn_api needs scikit-learn >= 1.6; install it with "
        "`pip install 'scikit-learn>=1.6'`"
    ) from err

__all__ = [
    "BaseEstimator",
    "ConvergenceWarning",
    "DensityMixin",
    "check_is_fitted",
    "check_random_state",
    "kmeans_plusplus",
    "validate_data",
]

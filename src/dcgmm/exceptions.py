"""Exception and warning types raised by dcgmm."""


class SpecError(ValueError):
    """A model specification string or layer chain is malformed or does not fit its input."""


class NumericalWarning(RuntimeWarning):
    """A computation produced non-finite values; the message says what to change."""


class CheckpointError(ValueError):
    """A run directory or checkpoint is missing, corrupted or incompatible."""


class DataError(ValueError):
    """A dataset file or selection cannot be used (wrong format, empty, unknown classes)."""

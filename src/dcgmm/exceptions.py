"""Exception and warning types raised by dcgmm.

The errors about user input are ``ValueError`` subclasses; :class:`OutputError` is an
``OSError`` (the operating system refused a write), so ``except OSError`` still catches it.
"""

import errno

__all__ = [
    "AnnealingWarning",
    "CheckpointError",
    "DataError",
    "NumericalWarning",
    "OutputError",
    "SpecError",
]


class SpecError(ValueError):
    """A model specification string or layer chain is malformed or does not fit its input."""


class NumericalWarning(RuntimeWarning):
    """A computation produced non-finite values; the message says what to change."""


class AnnealingWarning(UserWarning):
    """A run ended before every GMM layer's annealing radius reached its floor.

    Its numbers describe a model still being annealed (blurred components): train longer,
    or with ``until_annealed=True`` (``--until-annealed``).
    """


class CheckpointError(ValueError):
    """A run directory or checkpoint is missing, corrupted or incompatible."""


class DataError(ValueError):
    """A dataset file or selection cannot be used (wrong format, empty, unknown classes)."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_PERMITTED = {errno.EACCES, errno.EPERM, errno.EROFS}


class OutputError(OSError):
    """A file or folder cannot be written (read-only place, full disk); the message says why.

    ``errno`` is that of the underlying ``OSError``.
    """

    def __init__(self, message: str, errno_code: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_code

    @classmethod
    def from_os_error(
        cls, err: OSError, path: object, *, flag: str = "--out", note: str = ""
    ) -> "OutputError":
        """Return an ``OutputError`` that says what failed at ``path`` and what to do.

        ``note`` is appended (e.g. what was kept of an earlier version of the file).
        """
        reason = err.strerror or str(err)
        if err.errno in _DISK_FULL:
            hint = f"the disk is full. Free some space or choose another output folder ({flag})"
        elif err.errno in _NOT_PERMITTED:
            hint = f"the place is read-only for this user. Choose a writable output folder ({flag})"
        elif err.errno in (errno.ENOTDIR, errno.EEXIST):
            hint = f"a file is in the way of the folder. Choose another output folder ({flag})"
        else:
            hint = f"choose another output folder ({flag})"
        return cls(f"cannot write {path} ({reason}): {hint}{note}", err.errno)

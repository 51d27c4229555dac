"""Call a dcgmm function past the suite's type-check hook, as an untyped caller would."""

from collections.abc import Callable
from typing import Any


def untyped(function: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``function`` without beartype's wrapper (exactly one level).

    ``inspect.unwrap`` would follow every ``__wrapped__``; under mutmut that goes past the
    mutant's trampoline to the unmutated original, so a test of an untyped caller's error would
    check the original code instead of the mutant.
    """
    return getattr(function, "__wrapped__", function)

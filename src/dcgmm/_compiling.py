"""Run a fused function through ``torch.compile`` where that pays, else its op-by-op form.

Some passes of the training step are many element-wise operations, or a scatter, that eager
PyTorch runs as one kernel each (or row by row); inductor turns each into one C++ loop. Their
callers decide where compiling pays (the CPU, float32, a large enough tensor) and name an
op-by-op form that gives the same results. ``DCGMM_COMPILE=0`` always runs that form; where
compiling fails (no C++ compiler), a warning says so once and the op-by-op forms run from then
on, in every caller.

Each function is compiled for at most :data:`MAX_SHAPES` argument shapes; further shapes run
op by op. Dynamo itself stops recompiling a function after 8 shapes and runs it eagerly from
then on, which for a scatter is slower than the op-by-op form (22 against 13 ms, preset E's
second layer): a process that trains many models stays on the fast forms this way.
"""

import os
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["MAX_SHAPES", "call", "enabled", "will_compile"]

MAX_SHAPES = 8  # torch._dynamo.config.recompile_limit's default

_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
_shapes: dict[Callable[..., Any], set[Hashable]] = {}
_failed = False


def enabled() -> bool:
    """Return whether compiled forms may run (not disabled, no compilation failed yet)."""
    return not _failed and os.environ.get("DCGMM_COMPILE", "1") != "0"


def _key(value: Any) -> Hashable:
    """Return what a compiled function specialises on: tensors' layouts, other values."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.dtype, value.device.type)
    if isinstance(value, tuple | list):
        return tuple(_key(v) for v in value)
    return value


def will_compile(fused: Callable[..., Any], *args: Any) -> bool:
    """Return whether :func:`call` runs ``fused`` compiled for ``args`` (given it applies)."""
    return _has_room(fused, _key(args))


def _has_room(fused: Callable[..., Any], key: Hashable) -> bool:
    """Return whether ``fused`` may run compiled for arguments of this key."""
    if not enabled():
        return False
    known = _shapes.get(fused, set())
    return key in known or len(known) < MAX_SHAPES


def call(
    fused: Callable[..., Any],
    op_by_op: Callable[..., Any],
    *args: Any,
    applies: bool,
    single_threaded: bool = False,
) -> Any:
    """Return ``fused(*args)``, compiled, if ``applies`` and :func:`will_compile`; else op by op.

    ``fused`` is compiled once, ``dynamic=False``: one kernel per shape; ``single_threaded``
    (fixed at the first call) makes its loops serial, for a scatter, which inductor runs in
    parallel with atomic additions (5x slower than one thread on 2 threads, preset E).
    """
    global _failed
    key = _key(args)
    if not (applies and _has_room(fused, key)):
        return op_by_op(*args)
    try:
        if fused not in _compiled:
            options: dict[str, str | int | bool | Callable[..., Any]] | None = (
                {"cpp.threads": 1} if single_threaded else None
            )
            _compiled[fused] = torch.compile(fused, dynamic=False, options=options)
        out = _compiled[fused](*args)
    except Exception as error:  # any compiler failure: fall back, say so once
        _failed = True
        warnings.warn(
            f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); the fused "
            "passes of the training step run op by op from now on (slower, same results). "
            "Set DCGMM_COMPILE=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return op_by_op(*args)
    _shapes.setdefault(fused, set()).add(key)
    return out

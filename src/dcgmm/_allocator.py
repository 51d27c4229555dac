"""Keep freed memory in the process (glibc): big tensors are not mapped and unmapped per step.

glibc serves allocations above its mmap threshold (128 KiB at first, adapting up to 32 MiB)
with fresh pages from the kernel and returns them on free, and trims the heap top it no
longer uses; the next step then page-faults those pages back in, zero-filled. A training step
allocates tens of MB of temporaries (an independent GMM layer's windows, its gradients), so
on this project's 2-core machine the recipes' independent preset E spent about 40% of its
step there: 90 -> 54 ms per step at batch 100, 7x fewer page faults, once freed memory stays
(measured with ``benchmarks/bench_preset.py``). A caching allocator does the same on GPUs.

The cost: the process keeps its peak working set instead of giving memory back. Set
``DCGMM_RETAIN_FREED_MEMORY=0`` to leave the allocator alone.
"""

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap
_TRIM_THRESHOLD = 1 << 31  # and the heap is not trimmed below 2 GiB of free space
_done = False


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; return whether the setting was applied.

    A no-op returning False off Linux/glibc, when ``DCGMM_RETAIN_FREED_MEMORY=0``, or after the
    first call.
    """
    global _done
    if _done or not sys.platform.startswith("linux"):
        return False
    _done = True
    if os.environ.get("DCGMM_RETAIN_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1

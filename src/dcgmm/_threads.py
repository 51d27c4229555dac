"""How many threads torch uses: the CPUs this process may run on, never more.

torch starts one OpenMP thread per core it sees. In a container with a CPU quota (cgroup
``cpu.max``), or a process pinned to a few cores, that can be many more threads than CPUs,
and OpenMP threads that outnumber the CPUs wait for each other at every parallel region. On
this project's 2-core machine, two training jobs of preset E with 2 threads each ran at 46-50
ms per step, with 1 thread each at 25-27 ms; one job alone at 15.6 ms with 2 threads
(``benchmarks/bench_preset.py``). So: jobs side by side get one thread each (``dcgmm
--threads 1``, or ``OMP_NUM_THREADS=1``), and the default never exceeds the usable CPUs.
"""

import math
import os
from pathlib import Path

import torch

__all__ = ["apply_threads", "usable_cpus"]

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def usable_cpus() -> int:
    """Return the CPUs this process may use: its affinity mask, capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def apply_threads(requested: int | None) -> int:
    """Set torch's intra-op threads: ``requested``, else at most :func:`usable_cpus`.

    ``OMP_NUM_THREADS`` in the environment counts as a request (torch read it at start).
    Returns the number of threads now in use.

    Raises
    ------
    ValueError
        If ``requested`` is not a positive number.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be a positive number of threads; got {requested}")
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(torch.get_num_threads(), usable_cpus()))
    return torch.get_num_threads()
